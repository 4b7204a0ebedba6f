# The architecture of iCAR's text tower: Hugging Face's roberta-base (the
# fields of its config.json).  Only the shape is given here; the weights come
# from the iCAR checkpoint, so no RoBERTa download is needed (the tokenizer
# still is: `tokenizer` in the text encoder's config).
roberta_base = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-05,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2)

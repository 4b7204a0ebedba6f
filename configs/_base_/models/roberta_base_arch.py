# The architecture of iCAR's text tower: Hugging Face's roberta-base (the
# fields of its config.json).  Only the shape is given here; the weights come
# from the iCAR checkpoint, so no RoBERTa download is needed -- only its
# tokenizer files (vocab.json + merges.txt, or tokenizer.json).
#
# `roberta_tokenizer` is the ONE setting for them, used by every config
# (detection, segmentation, video, classification): a local folder, by
# default data/pretrained/roberta-base.  To use another folder, set the
# environment variable ICAR_ROBERTA for every config and tool:
#   ICAR_ROBERTA=/path/to/roberta-base python tools/test.py CONFIG CKPT
# (mmengine substitutes it when the config is read; a --cfg-options
# roberta_tokenizer=... comes too late to reach the model, see
# docs/troubleshooting.md for the per-task --cfg-options key).
roberta_tokenizer = '{{$ICAR_ROBERTA:data/pretrained/roberta-base}}'
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
# iCAR's text tower as every TextClassifier of the configs declares it
# (`text_encoder={{_base_.icar_text_encoder}}`): masked-mean RoBERTa, then
# the 768 -> 256 projector; prompts truncated at 16 tokens as in training.
icar_text_encoder = dict(
    type='RobertaTextEncoder',
    model=None,
    config=roberta_base,
    tokenizer=roberta_tokenizer,
    max_length=16,
    embed_dim=256)

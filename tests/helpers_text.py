# Copyright (c) icar_dense contributors. All rights reserved.
"""Helpers for the text-tower tests: a real byte-level BPE tokenizer folder
and tiny model configs with the real key layouts.

No RoBERTa vocabulary ships offline, so the tests train a small byte-level BPE
(the algorithm and file format of RoBERTa's) on sentences that contain the
class names and templates, and save it as ``vocab.json`` / ``merges.txt``,
which ``RobertaTokenizerFast.from_pretrained`` reads like a real checkpoint
folder.
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

from typing import Dict, Iterable, List  # noqa: E402

# RoBERTa's special tokens in RoBERTa's id order: <pad> must be id 1, the
# padding_idx RobertaConfig assumes.
SPECIAL_TOKENS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']

CLASS_NAMES = ['cat', 'dog', 'bow_(weapon)', 'traffic_light']

CORPUS = [
    'a photo of a cat.',
    'a photo of a dog.',
    'a bad photo of the bow (weapon), a weapon that shoots arrows.',
    'a photo of a traffic light, a signal that controls traffic.',
    'a cat is a small domesticated carnivorous mammal.',
    'a dog is a domesticated descendant of the wolf.',
    'the origami cat. a sketch of a dog. art of the traffic light.',
    'a photo of many dogs and cats in the scene.',
]


def build_tokenizer_dir(folder: str,
                        extra_texts: Iterable[str] = (),
                        vocab_size: int = 400) -> str:
    """Train a byte-level BPE on the corpus and save it into ``folder``.

    Args:
        folder (str): Output folder (created).
        extra_texts (Iterable[str]): More training sentences.
        vocab_size (int): Target vocabulary size.

    Returns:
        str: ``folder``, holding ``vocab.json`` and ``merges.txt``.
    """
    from tokenizers import ByteLevelBPETokenizer
    os.makedirs(folder, exist_ok=True)
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        list(CORPUS) + list(extra_texts),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False)
    tokenizer.save_model(folder)
    return folder


def tokenizer_size(folder: str) -> int:
    import json
    with open(os.path.join(folder, 'vocab.json'), encoding='utf-8') as f:
        return len(json.load(f))


def tiny_roberta_config(vocab_size: int) -> Dict:
    """RobertaConfig kwargs of a 2-layer, 32-wide model."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)


def tiny_roberta_encoder_cfg(tokenizer_dir: str,
                             embed_dim: int = 16,
                             max_length: int = 16) -> Dict:
    return dict(
        type='RobertaTextEncoder',
        config=tiny_roberta_config(tokenizer_size(tokenizer_dir)),
        tokenizer=tokenizer_dir,
        max_length=max_length,
        embed_dim=embed_dim)


def tiny_clip_cfg(embed_dim: int = 16, context_length: int = 16) -> Dict:
    return dict(
        type='CLIPTextTransformer',
        context_length=context_length,
        width=32,
        layers=2,
        heads=2,
        embed_dim=embed_dim)


class EncodeCounter:
    """Wraps ``encoder.encode`` to count calls and encoded texts."""

    def __init__(self, encoder) -> None:
        self.calls = 0
        self.texts: List[str] = []
        self._encode = encoder.encode
        encoder.encode = self

    def __call__(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return self._encode(texts)

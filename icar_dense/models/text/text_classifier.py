# Copyright (c) icar_dense contributors. All rights reserved.
"""Where ``TextClassifier`` was defined before it was split; kept so that
``icar_dense.models.text.text_classifier`` imports keep working.

The classifier is :mod:`.classifier` (projection, temperature, background,
proxies, forward), its text side :mod:`.bank` (vocabulary, prompts, encoder,
caches, embeddings file) and its checkpoint reading :mod:`.loading`.
"""
from .classifier import TextClassifier
from .loading import convert_icar_text_classifier

__all__ = ['TextClassifier', 'convert_icar_text_classifier']

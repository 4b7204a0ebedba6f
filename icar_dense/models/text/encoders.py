# Copyright (c) icar_dense contributors. All rights reserved.
"""Text towers behind one ``encode(texts) -> (N, D)`` interface.

* :class:`RobertaTextEncoder` (:mod:`.roberta`) is iCAR's sentence model:
  HuggingFace RoBERTa (no pooling layer), a mean over the non-padding
  tokens, and a linear projection to the joint space.  Its submodules are
  named ``backbone`` and ``projector`` like the official checkpoint's
  ``sentence_model.*`` keys.
* :class:`CLIPTextTransformer` (:mod:`.clip`) is CLIP's text transformer
  with CLIP's own BPE tokenizer (shipped by mmsegmentation); its parameter
  names are those of OpenAI CLIP / open_clip, so their weights load without
  renaming.

Both implement :class:`BaseTextEncoder` (:mod:`.encoder_base`); this module
gathers them under their former import path.
"""
from .clip import (CLIPTextTransformer, clip_text_state_dict,
                   read_clip_checkpoint)
from .encoder_base import BaseTextEncoder
from .roberta import RobertaTextEncoder, load_roberta_tokenizer

__all__ = [
    'BaseTextEncoder', 'RobertaTextEncoder', 'CLIPTextTransformer',
    'load_roberta_tokenizer', 'clip_text_state_dict', 'read_clip_checkpoint'
]

# Copyright (c) icar_dense contributors. All rights reserved.
"""Text towers, vocabularies, prompt templates and the text classifier.

* :mod:`.classifier` -- ``TextClassifier``: visual projection, tau,
  background, InMaP proxies, forward; owns a text bank or borrows one
  (``share``), and :mod:`.loading` reads iCAR checkpoints into it;
* :mod:`.bank` -- ``TextBank``: vocabulary + prompts + encoder (or
  :mod:`.embeddings_file`) -> ``(C, D)`` class embeddings, with the caches
  (:mod:`.cache`) and sharded encoding (:mod:`.distributed`);
* :mod:`.roberta`, :mod:`.clip` -- the text towers (:mod:`.encoder_base`);
* :mod:`.vocabulary` (:mod:`.class_lists`, :mod:`.vocabulary_files`),
  :mod:`.templates`, :mod:`.prompt_check` -- class lists and prompts.
"""
from .bank import TextBank
from .classifier import TextClassifier
from .clip import (CLIPTextTransformer, clip_text_state_dict,
                   read_clip_checkpoint)
from .encoder_base import BaseTextEncoder
from .loading import convert_icar_text_classifier
from .roberta import RobertaTextEncoder, load_roberta_tokenizer
from .templates import PromptSet, build_prompts, get_templates
from .vocabulary import Vocabulary, load_vocabulary, readable_name

__all__ = [
    'BaseTextEncoder', 'RobertaTextEncoder', 'CLIPTextTransformer',
    'TextClassifier', 'TextBank', 'Vocabulary', 'load_vocabulary',
    'readable_name', 'get_templates', 'build_prompts', 'PromptSet',
    'load_roberta_tokenizer', 'clip_text_state_dict', 'read_clip_checkpoint',
    'convert_icar_text_classifier'
]

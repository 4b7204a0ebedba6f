# Copyright (c) icar_dense contributors. All rights reserved.
"""Text towers, vocabularies, prompt templates and the text classifier."""
from .bank import TextBank
from .classifier import TextClassifier
from .encoders import (BaseTextEncoder, CLIPTextTransformer,
                       RobertaTextEncoder, clip_text_state_dict,
                       load_roberta_tokenizer, read_clip_checkpoint)
from .loading import convert_icar_text_classifier
from .templates import PromptSet, build_prompts, get_templates
from .vocabulary import Vocabulary, load_vocabulary, readable_name

__all__ = [
    'BaseTextEncoder', 'RobertaTextEncoder', 'CLIPTextTransformer',
    'TextClassifier', 'TextBank', 'Vocabulary', 'load_vocabulary',
    'readable_name', 'get_templates', 'build_prompts', 'PromptSet',
    'load_roberta_tokenizer', 'clip_text_state_dict', 'read_clip_checkpoint',
    'convert_icar_text_classifier'
]

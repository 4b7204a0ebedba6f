# Copyright (c) icar_dense contributors. All rights reserved.
"""iCAR's sentence model: HuggingFace RoBERTa (no pooling layer), a mean
over the non-padding tokens, and a linear projection to the joint space.

Its submodules are named ``backbone`` and ``projector`` like the official
checkpoint's ``sentence_model.*`` keys.  The tokenizer files are checked
when loaded: an offline folder without them would otherwise encode every
prompt as ``<unk>``.
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from icar_dense.registry import register_shared_model
from .cache import json_fingerprint
from .encoder_base import BaseTextEncoder

__all__ = [
    'RobertaTextEncoder', 'load_roberta_tokenizer', 'ROBERTA_ENV',
    'ROBERTA_FIX'
]


def _is_local_path(name: str) -> bool:
    """Whether ``name`` must be a local path rather than a hub id.

    Hub ids are ``name`` or ``org/name``; anything absolute, relative with a
    dot, home-relative or with more than one separator is a path.
    """
    if osp.exists(name) or osp.isabs(name) or name.startswith(('.', '~')):
        return True
    return name.count('/') > 1 or (os.sep != '/' and os.sep in name)


# A byte-level BPE vocabulary holds at least the 256 byte symbols.  An offline
# transformers tokenizer pointed at a folder without its files silently comes
# back with only the special tokens, which would encode every prompt as <unk>.
_MIN_BYTE_BPE_VOCAB = 256

# How to point every config at the RoBERTa tokenizer (configs/_base_/models/
# roberta_base_arch.py: roberta_tokenizer = '{{$ICAR_ROBERTA:...}}').
ROBERTA_ENV = 'ICAR_ROBERTA'
ROBERTA_FIX = (
    'iCAR\'s text tower needs the roberta-base tokenizer files (vocab.json + '
    'merges.txt, or tokenizer.json; the weights come from the iCAR '
    'checkpoint). Put them in data/pretrained/roberta-base (the configs\' '
    'default, relative to the folder you run from), or point every config '
    f'at your folder with the environment variable {ROBERTA_ENV}=/path/to/'
    'roberta-base, or for one run with --cfg-options '
    '<head>.text_classifier.text_encoder.tokenizer=/path/to/roberta-base '
    '(<head>: model.roi_head.bbox_head for detection, model.decode_head for '
    'segmentation, model.cls_head for video, model for classification). See '
    'docs/troubleshooting.md.')


def load_roberta_tokenizer(name: str) -> Any:
    """Load a RoBERTa (byte-level BPE) tokenizer and check it is complete.

    Args:
        name (str): Local folder with ``vocab.json`` + ``merges.txt`` or
            ``tokenizer.json``; or a hub id already in the local HF cache.

    Returns:
        transformers.PreTrainedTokenizerBase: The tokenizer.

    Raises:
        FileNotFoundError / OSError / ValueError: naming the folder (or hub
            id) and how to point the configs at the tokenizer files.
    """
    from transformers import RobertaTokenizerFast
    if _is_local_path(name):
        folder = osp.expanduser(name)
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'RoBERTa tokenizer folder {folder!r} does not exist '
                f'({osp.abspath(folder)}). {ROBERTA_FIX}')
        has_bpe = all(
            osp.isfile(osp.join(folder, f))
            for f in ('vocab.json', 'merges.txt'))
        if not has_bpe and not osp.isfile(osp.join(folder, 'tokenizer.json')):
            raise FileNotFoundError(
                f'RoBERTa tokenizer folder {folder!r} has neither vocab.json '
                f'+ merges.txt nor tokenizer.json. {ROBERTA_FIX}')
        tokenizer = RobertaTokenizerFast.from_pretrained(folder)
    else:
        try:
            tokenizer = RobertaTokenizerFast.from_pretrained(name)
        except OSError as e:
            raise OSError(
                f'Cannot load the RoBERTa tokenizer {name!r}: it is not a '
                'local folder and not in the local Hugging Face cache (the '
                f'hub may be unreachable). {ROBERTA_FIX} ({e})') from None
    if len(tokenizer) <= _MIN_BYTE_BPE_VOCAB:
        raise ValueError(
            f'The RoBERTa tokenizer loaded from {name!r} has only '
            f'{len(tokenizer)} tokens; a byte-level BPE vocabulary has at '
            f'least {_MIN_BYTE_BPE_VOCAB} byte symbols plus special tokens: '
            'its vocab.json / merges.txt / tokenizer.json are missing or '
            f'were not read. {ROBERTA_FIX}')
    return tokenizer


def _load_roberta_model(model: str, add_pooling_layer: bool = False) -> Any:
    from transformers import RobertaModel
    if _is_local_path(model):
        folder = osp.expanduser(model)
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'RoBERTa model folder {folder!r} does not exist. The iCAR '
                'configs take RoBERTa\'s weights from the iCAR checkpoint '
                '(model=None, config=roberta-base\'s shape); `model` is only '
                'for Hugging Face weights. ' + ROBERTA_FIX)
        return RobertaModel.from_pretrained(
            folder, add_pooling_layer=add_pooling_layer)
    try:
        return RobertaModel.from_pretrained(
            model, add_pooling_layer=add_pooling_layer)
    except OSError as e:
        raise OSError(
            f'Cannot load the RoBERTa model {model!r}: it is not a local '
            'folder and not available in the local Hugging Face cache (the '
            'hub may be unreachable). Pass a local folder, or model=None '
            f'with config=dict(...) for random weights. ({e})') from None


@register_shared_model()
class RobertaTextEncoder(BaseTextEncoder):
    """iCAR's sentence model: RoBERTa, masked mean pooling, projection.

    Args:
        model (str, optional): Local folder (or cached hub id) for
            ``RobertaModel.from_pretrained``. None builds a randomly
            initialised model from ``config``.
        tokenizer (str, optional): Local tokenizer folder (``vocab.json`` +
            ``merges.txt`` or ``tokenizer.json``). Defaults to ``model``.
        config (dict, optional): ``RobertaConfig`` keyword arguments, used
            when ``model`` is None (tiny test models, random-init training).
        max_length (int): Tokens per prompt including ``<s>`` and ``</s>``;
            longer prompts are truncated. Defaults to 16 as in iCAR.
        embed_dim (int): Output width of ``projector``. Defaults to 256.
        lower_case (bool): Lower-case prompts before tokenizing, as iCAR
            does. Defaults to True.
        batch_size (int): Prompts per forward pass. Defaults to 256.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 model: Optional[str] = None,
                 tokenizer: Optional[str] = None,
                 config: Optional[dict] = None,
                 max_length: int = 16,
                 embed_dim: int = 256,
                 lower_case: bool = True,
                 batch_size: int = 256,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dim, batch_size, init_cfg)
        from transformers import RobertaConfig, RobertaModel
        if model is None and config is None:
            raise ValueError('RobertaTextEncoder needs `model` (a folder of '
                             'pretrained weights) or `config` (RobertaConfig '
                             'kwargs for a randomly initialised model).')
        if model is not None and config is not None:
            raise ValueError('Give RobertaTextEncoder either `model` or '
                             '`config`, not both.')
        tokenizer = tokenizer if tokenizer is not None else model
        if tokenizer is None:
            raise ValueError('RobertaTextEncoder with `config` needs a '
                             '`tokenizer` folder.')
        if max_length < 3:
            raise ValueError(
                f'max_length must be >= 3 (<s>, a token, </s>), got '
                f'{max_length}.')
        self.max_length = max_length
        self.lower_case = lower_case
        self.tokenizer = load_roberta_tokenizer(tokenizer)
        if model is not None:
            self.backbone = _load_roberta_model(model)
        else:
            # RobertaConfig keeps unknown keys as attributes: a misspelt
            # field would silently build the default-size model
            unknown = sorted(set(config) - set(RobertaConfig().to_dict()))
            if unknown:
                raise KeyError(f'RobertaTextEncoder: config keys {unknown} '
                               'are not RobertaConfig fields')
            self.backbone = RobertaModel(
                RobertaConfig(**config), add_pooling_layer=False)
        cfg = self.backbone.config
        if len(self.tokenizer) > cfg.vocab_size:
            raise ValueError(
                f'The tokenizer {tokenizer} has {len(self.tokenizer)} tokens '
                f'but the RoBERTa model only embeds {cfg.vocab_size}: they '
                'do not belong together.')
        if self.tokenizer.pad_token_id != cfg.pad_token_id:
            # RoBERTa derives position ids from the padding id; a mismatch
            # shifts every position silently.
            raise ValueError(
                f'The tokenizer {tokenizer} pads with id '
                f'{self.tokenizer.pad_token_id} but the model expects '
                f'pad_token_id={cfg.pad_token_id}.')
        if max_length + cfg.pad_token_id + 1 > cfg.max_position_embeddings:
            raise ValueError(
                f'max_length={max_length} needs max_position_embeddings >= '
                f'{max_length + cfg.pad_token_id + 1}, the model has '
                f'{cfg.max_position_embeddings}.')
        # mmengine's init_weights would call HF's own init_weights on the
        # backbone; the backbone is complete after construction (pretrained
        # or HF-initialised), so keep mmengine away from it.
        self.backbone.is_init = True
        self.projector = nn.Linear(cfg.hidden_size, embed_dim, bias=False)
        self._tokenizer_fp: Optional[str] = None

    def tokenize(self, texts: List[str]) -> Dict[str, torch.Tensor]:
        """Pad to the longest text, truncate to ``max_length``."""
        if self.lower_case:
            texts = [t.lower() for t in texts]
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors='pt')

    def encode_batch(self, texts: List[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        input_ids = tokens['input_ids'].to(self.device)
        mask = tokens['attention_mask'].to(self.device)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=mask).last_hidden_state
        # mean over the real tokens only: padding must not change a text's
        # embedding with the length of its batch-mates
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.projector(pooled)

    def cache_signature(self) -> Dict[str, Any]:
        if self._tokenizer_fp is None:
            backend = getattr(self.tokenizer, 'backend_tokenizer', None)
            if backend is not None:
                self._tokenizer_fp = json_fingerprint(backend.to_str())
            else:
                self._tokenizer_fp = json_fingerprint(
                    sorted(self.tokenizer.get_vocab().items()))
        return dict(
            type=type(self).__name__,
            max_length=self.max_length,
            lower_case=self.lower_case,
            pooling='masked_mean',
            tokenizer=self._tokenizer_fp)

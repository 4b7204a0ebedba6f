# Copyright (c) icar_dense contributors. All rights reserved.
"""Text towers behind one ``encode(texts) -> (N, D)`` interface.

* :class:`RobertaTextEncoder` is iCAR's sentence model: HuggingFace RoBERTa
  (no pooling layer), a mean over the non-padding tokens, and a linear
  projection to the joint space.  Its submodules are named ``backbone`` and
  ``projector`` like the official checkpoint's ``sentence_model.*`` keys.
* :class:`CLIPTextTransformer` is CLIP's text transformer with CLIP's own BPE
  tokenizer (shipped by mmsegmentation); its parameter names are those of
  OpenAI CLIP / open_clip, so their weights load without renaming.
"""
import logging
import os
import os.path as osp
import sys
import warnings
import zipfile
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.dist import is_main_process as _is_main_process
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.utils import ProgressBar

from icar_dense.registry import register_shared_model
from icar_dense.utils.checkpoint import load_checkpoint_file, unwrap_state_dict
from .cache import file_fingerprint, json_fingerprint

__all__ = ['BaseTextEncoder', 'RobertaTextEncoder', 'CLIPTextTransformer']


class BaseTextEncoder(BaseModule):
    """Common interface of the text towers used by ``TextClassifier``.

    Subclasses implement :meth:`encode_batch` and :meth:`cache_signature`.

    Args:
        embed_dim (int): Width of the returned embeddings.
        batch_size (int): Texts per forward pass in :meth:`encode`.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dim: int,
                 batch_size: int = 256,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        self.embed_dim = embed_dim
        self.batch_size = batch_size
        # batches from which encode() shows a progress bar
        self.progress_min_batches = 4

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_batch(self, texts: List[str]) -> torch.Tensor:
        """Embed one batch of texts, shape (N, embed_dim), unnormalised."""
        raise NotImplementedError

    def cache_signature(self) -> Dict[str, Any]:
        """What, besides the weights, the embeddings of a text depend on."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts in batches of ``batch_size``.

        Args:
            texts (Sequence[str]): The texts.

        Returns:
            torch.Tensor: Unnormalised embeddings, shape (N, embed_dim).
        """
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        starts = range(0, len(texts), self.batch_size)
        # a large vocabulary x templates takes minutes on a CPU: show it,
        # on stderr so that tools printing JSON on stdout stay parseable
        bar = None
        if len(starts) >= self.progress_min_batches and _is_main_process():
            bar = ProgressBar(len(texts), file=sys.stderr)
        outs = []
        for i in starts:
            outs.append(self.encode_batch(texts[i:i + self.batch_size]))
            if bar is not None:
                bar.update(len(outs[-1]))
        if bar is not None:
            sys.stderr.write('\n')
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)


# ----------------------------------------------------------------------------
# RoBERTa
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# CLIP
# ----------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _clip_tokenizer(bpe_path: Optional[str]) -> Any:
    # mmseg's copy of OpenAI's SimpleTokenizer reads CLIP's real BPE merges
    # (bpe_simple_vocab_16e6.txt.gz, shipped inside mmsegmentation).
    from mmseg.utils.tokenizer import SimpleTokenizer, default_bpe
    path = bpe_path or default_bpe()
    if not osp.isfile(path):
        raise FileNotFoundError(f'CLIP BPE vocabulary {path} does not exist.')
    return SimpleTokenizer(path)


class _QuickGELU(nn.Module):
    """OpenAI CLIP's activation (open_clip's ``*-quickgelu`` models)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block with CLIP's parameter names.

    ``nn.MultiheadAttention`` is used directly (not mmcv's wrapper, which adds
    a level to the names) so that ``attn.in_proj_weight`` etc. match the
    OpenAI / open_clip state dicts.
    """

    def __init__(self, width: int, heads: int, act: str) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict([('c_fc', nn.Linear(width, width * 4)),
                         ('gelu',
                          _QuickGELU() if act == 'quick_gelu' else nn.GELU()),
                         ('c_proj', nn.Linear(width * 4, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor,
                attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):

    def __init__(self, width: int, layers: int, heads: int, act: str) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            _ResidualAttentionBlock(width, heads, act) for _ in range(layers))

    def forward(self, x: torch.Tensor,
                attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


_CLIP_TEXT_PREFIXES = ('token_embedding.', 'positional_embedding',
                       'transformer.', 'ln_final.', 'text_projection')


def read_clip_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Read a CLIP state dict from an OpenAI / open_clip checkpoint file.

    OpenAI's released ``*.pt`` files are TorchScript archives, read with
    ``torch.jit.load`` (TorchScript, unlike pickle, runs no arbitrary Python);
    ``.safetensors`` files with safetensors; anything else with
    :func:`~icar_dense.utils.checkpoint.load_checkpoint_file`
    (``weights_only=True``).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'CLIP checkpoint {path} does not exist.')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith('constants.pkl') for n in names):
            with warnings.catch_warnings():
                # torch deprecates TorchScript, but OpenAI's releases are it
                warnings.simplefilter('ignore', FutureWarning)
                return torch.jit.load(path, map_location='cpu').state_dict()
    return unwrap_state_dict(load_checkpoint_file(path), path)


def clip_text_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Pick the text-tower keys of a full CLIP state dict.

    Accepts OpenAI CLIP and open_clip layouts, with a ``module.`` (DDP) or
    ``text.`` (open_clip ``CustomTextCLIP``) prefix; drops ``visual.*``,
    ``logit_scale``, ``attn_mask`` and the like.  open_clip models with a
    linear ``text_projection`` are converted to OpenAI's (width, D) matrix.
    """
    out = {}
    for key, value in state_dict.items():
        for prefix in ('module.', 'text.'):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(_CLIP_TEXT_PREFIXES):
            out[key] = value
    if 'text_projection.weight' in out:
        out['text_projection'] = out.pop('text_projection.weight').t()
    if 'token_embedding.weight' not in out:
        raise KeyError('No CLIP text-tower keys (token_embedding.weight, '
                       'transformer.resblocks.*, ...) in the state dict; '
                       f'first keys: {list(state_dict)[:5]}.')
    return out


def _clip_arch_from_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """CLIP text architecture implied by its weights (OpenAI conventions)."""
    width = state_dict['ln_final.weight'].shape[0]
    layers = len({
        k.split('.')[2]
        for k in state_dict if k.startswith('transformer.resblocks.')
    })
    return dict(
        context_length=state_dict['positional_embedding'].shape[0],
        vocab_size=state_dict['token_embedding.weight'].shape[0],
        width=width,
        layers=layers,
        # OpenAI's text towers all use 64-wide heads; the head count is not
        # visible in the weights
        heads=max(width // 64, 1),
        embed_dim=state_dict['text_projection'].shape[1])


@register_shared_model()
class CLIPTextTransformer(BaseTextEncoder):
    """CLIP's text tower with CLIP's real BPE tokenizer.

    Token + positional embedding, causally masked pre-norm transformer,
    ``ln_final``, the feature at the end-of-text token, ``text_projection``.
    Parameter names are OpenAI CLIP's, so a full CLIP or open_clip state dict
    loads after :func:`clip_text_state_dict` drops the image tower.

    Architecture arguments left as None are read from ``pretrained`` when it
    is given, else default to the ViT-B/32 text tower (77 / 49408 / 512 / 12 /
    8 / 512).

    Args:
        context_length (int, optional): Maximum tokens incl. start/end.
        vocab_size (int, optional): Rows of ``token_embedding``.
        width (int, optional): Transformer width.
        layers (int, optional): Number of residual attention blocks.
        heads (int, optional): Attention heads (OpenAI: width // 64).
        embed_dim (int, optional): Output width of ``text_projection``.
        act (str): ``'quick_gelu'`` (OpenAI weights) or ``'gelu'`` (most
            open_clip weights). Defaults to ``'quick_gelu'``.
        pretrained (str, optional): CLIP checkpoint (OpenAI TorchScript
            ``.pt``, open_clip ``.bin`` / ``.pt`` / ``.safetensors``).
        bpe_path (str, optional): BPE merges file; defaults to the one
            mmsegmentation ships.
        batch_size (int): Prompts per forward pass. Defaults to 256.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    _DEFAULT_ARCH = dict(
        context_length=77,
        vocab_size=49408,
        width=512,
        layers=12,
        heads=8,
        embed_dim=512)

    def __init__(self,
                 context_length: Optional[int] = None,
                 vocab_size: Optional[int] = None,
                 width: Optional[int] = None,
                 layers: Optional[int] = None,
                 heads: Optional[int] = None,
                 embed_dim: Optional[int] = None,
                 act: str = 'quick_gelu',
                 pretrained: Optional[str] = None,
                 bpe_path: Optional[str] = None,
                 batch_size: int = 256,
                 init_cfg: Optional[dict] = None) -> None:
        given = dict(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            layers=layers,
            heads=heads,
            embed_dim=embed_dim)
        state_dict = None
        if pretrained is not None:
            state_dict = clip_text_state_dict(read_clip_checkpoint(pretrained))
            implied = _clip_arch_from_state_dict(state_dict)
        else:
            implied = self._DEFAULT_ARCH
        arch = {k: implied[k] if v is None else v for k, v in given.items()}
        super().__init__(arch['embed_dim'], batch_size, init_cfg)
        if act not in ('quick_gelu', 'gelu'):
            raise ValueError(f'act must be "quick_gelu" or "gelu", got {act}.')
        if arch['width'] % arch['heads']:
            raise ValueError(f'width {arch["width"]} is not divisible by '
                             f'heads {arch["heads"]}.')
        self.context_length = arch['context_length']
        self.width = arch['width']
        self.heads = arch['heads']
        self.act = act
        self.bpe_path = bpe_path
        self._tokenizer = _clip_tokenizer(bpe_path)
        self._sot = self._tokenizer.encoder['<start_of_text>']
        self._eot = self._tokenizer.encoder['<end_of_text>']
        if self._tokenizer.vocab_size > arch['vocab_size']:
            raise ValueError(
                f'The CLIP tokenizer has {self._tokenizer.vocab_size} tokens '
                f'but vocab_size is {arch["vocab_size"]}.')

        self.token_embedding = nn.Embedding(arch['vocab_size'], self.width)
        self.positional_embedding = nn.Parameter(
            torch.empty(self.context_length, self.width))
        self.transformer = _Transformer(self.width, arch['layers'],
                                        arch['heads'], act)
        self.ln_final = nn.LayerNorm(self.width)
        self.text_projection = nn.Parameter(
            torch.empty(self.width, arch['embed_dim']))
        self._init_clip_parameters(arch['layers'])
        self._bpe_fp: Optional[str] = None
        if state_dict is not None:
            self.load_clip_state_dict(state_dict)
            print_log(
                f'Loaded CLIP text weights from {pretrained}',
                logger='current',
                level=logging.INFO)

    def _init_clip_parameters(self, layers: int) -> None:
        # OpenAI CLIP's initialisation (model.py, initialize_parameters)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * layers)**-0.5
        fc_std = (2 * self.width)**-0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=attn_std)

    def load_clip_state_dict(self, state_dict: Dict[str,
                                                    torch.Tensor]) -> None:
        """Load OpenAI CLIP / open_clip weights (full model or text tower).

        Args:
            state_dict (dict[str, Tensor]): A CLIP state dict; image-tower and
                other non-text keys are ignored.
        """
        text = clip_text_state_dict(state_dict)
        own = self.state_dict()
        missing = sorted(set(own) - set(text))
        unexpected = sorted(set(text) - set(own))
        mismatched = [
            f'{k}: checkpoint {tuple(text[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in own
            if k in text and text[k].shape != own[k].shape
        ]
        if missing or unexpected or mismatched:
            raise ValueError(
                'CLIP text weights do not fit this CLIPTextTransformer: '
                f'missing {missing[:5]}, unexpected {unexpected[:5]}, shape '
                f'mismatches {mismatched[:5]}.')
        self.load_state_dict(text)

    def tokenize(self, texts: List[str]) -> torch.Tensor:
        """CLIP tokens, shape (N, L) with L <= context_length.

        Exactly OpenAI's ``clip.tokenize`` (lower-cased, ftfy-cleaned, start
        and end tokens, truncation keeping the end token), except that the
        zero padding is cut after the longest text: with the causal mask the
        end-of-text feature never sees later positions, so the result is the
        same and short prompts cost less.
        """
        encoded = []
        for text in texts:
            ids = [self._sot] + self._tokenizer.encode(text) + [self._eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self._eot
            encoded.append(ids)
        length = max(len(ids) for ids in encoded)
        tokens = torch.zeros(len(texts), length, dtype=torch.long)
        for i, ids in enumerate(encoded):
            tokens[i, :len(ids)] = torch.tensor(ids)
        return tokens

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed CLIP token ids, shape (N, L) -> (N, embed_dim)."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.full((length, length),
                            float('-inf'),
                            device=x.device,
                            dtype=x.dtype).triu_(1)
        x = self.ln_final(self.transformer(x, causal))
        # first end-of-text position; OpenAI uses argmax of the ids, which is
        # the same for its tokenizer but breaks with extra special tokens
        eot_pos = (tokens == self._eot).int().argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), eot_pos]
        return x @ self.text_projection

    def encode_batch(self, texts: List[str]) -> torch.Tensor:
        return self.forward_tokens(self.tokenize(texts).to(self.device))

    def cache_signature(self) -> Dict[str, Any]:
        if self._bpe_fp is None:
            from mmseg.utils.tokenizer import default_bpe
            self._bpe_fp = file_fingerprint(self.bpe_path or default_bpe())
        return dict(
            type=type(self).__name__,
            context_length=self.context_length,
            heads=self.heads,
            act=self.act,
            tokenizer=self._bpe_fp)

# Copyright (c) icar_dense contributors. All rights reserved.
"""CLIP's text transformer with CLIP's own BPE tokenizer (shipped by
mmsegmentation); its parameter names are those of OpenAI CLIP / open_clip,
so their weights load without renaming."""
import logging
import os.path as osp
import warnings
import zipfile
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log

from icar_dense.registry import register_shared_model
from icar_dense.checkpoint import load_checkpoint_file, unwrap_state_dict
from .cache import file_fingerprint
from .encoder_base import BaseTextEncoder

__all__ = [
    'CLIPTextTransformer', 'clip_text_state_dict', 'read_clip_checkpoint'
]


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
    :func:`~icar_dense.checkpoint.load_checkpoint_file`
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

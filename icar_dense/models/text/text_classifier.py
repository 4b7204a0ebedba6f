# Copyright (c) icar_dense contributors. All rights reserved.
"""The cosine classifier whose class weights come from a text encoder.

One module serves the detection box head, the segmentation pixel classifier
and the video classifier: visual features are projected to the joint space,
both sides are L2-normalised and the logits are ``cos / tau``.
"""
import logging
import math
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope

from icar_dense.registry import register_shared_model, shared_models_registry
from icar_dense.utils.checkpoint import (ICAR_TEXT, LEGACY_TEXT_KEYS,
                                         load_checkpoint_file,
                                         log_rebuilt_unused,
                                         save_checkpoint_file,
                                         split_icar_state_dict,
                                         unwrap_state_dict)
from .cache import EmbeddingDiskCache, json_fingerprint, state_dict_fingerprint
from .distributed import all_ranks_true, encode_sharded, get_dist_info
from .encoders import BaseTextEncoder
from .prompt_check import check_prompt_tokens
from .templates import PromptSet, build_prompts, get_templates
from .vocabulary import Vocabulary, describe, load_vocabulary

__all__ = ['TextClassifier', 'convert_icar_text_classifier']

# Bumped when the way prompts become embeddings changes, so that old disk
# cache entries are never read by new code.
_CACHE_FORMAT = 1


def convert_icar_text_classifier(
        state_dict: Dict[str, torch.Tensor],
        rebuilt: Optional[List[str]] = None) -> Dict[str, torch.Tensor]:
    """Rename an official iCAR state dict to ``TextClassifier`` keys.

    ``sentence_model.*`` becomes ``text_encoder.*`` (``backbone`` and
    ``projector`` keep their names) and ``visual_model.projector.weight``
    becomes ``visual_proj.weight``; the Swin keys belong to the backbone and
    are left out, and so are RoBERTa's ``embeddings.position_ids`` buffer
    and ``pooler.*`` (unused: the text feature is a masked mean).

    Args:
        state_dict (dict[str, Tensor]): ``torch.load(path)['model']``.
        rebuilt (list, optional): Receives the text keys left out as
            rebuilt / unused.

    Returns:
        dict[str, Tensor]: Keys relative to a ``TextClassifier``.
    """
    parts = split_icar_state_dict(state_dict, 'iCAR checkpoint')
    if rebuilt is not None:
        rebuilt.extend(k for k in parts['rebuilt'] if k.startswith(ICAR_TEXT))
    out = {'text_encoder.' + k: v for k, v in parts['text'].items()}
    if parts['visual_proj'] is not None:
        out['visual_proj.weight'] = parts['visual_proj']
    return out


def _build_text_encoder(cfg: Union[dict, nn.Module]) -> nn.Module:
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg)
    if isinstance(cfg.get('type'), type):
        cls = cfg.pop('type')
        return cls(**cfg)
    # Build from the registry of the current default scope (a config with
    # default_scope='mmseg' may name mmseg's own text encoders); outside a
    # task scope from icar_dense's own registry, which holds all of ours.
    scope = DefaultScope.get_current_instance()
    scope_name = scope.scope_name if scope is not None else None
    return shared_models_registry(scope_name).build(cfg)


@register_shared_model()
class TextClassifier(BaseModule):
    """Cosine classifier with class embeddings from a text encoder.

    ``forward`` maps visual features ``(..., in_channels)`` to logits
    ``(..., C)`` (``C + 1`` with ``background``; the background is the last
    class, like mmdet's background index ``num_classes``).

    Class embeddings: in training mode one random prompt (template x
    description) per class per call; in eval mode the normalised mean of the
    normalised embeddings of all prompts of the class.  Eval embeddings are
    cached in memory and, with ``cache_dir``, on disk under a sha256 of the
    encoder weights, tokenizer, vocabulary, descriptions and templates.  A
    frozen encoder encodes all prompts once also for training and only the
    sampled indices change per step.

    With torch.distributed initialised (world size > 1) and at least
    ``shard_min_prompts`` prompts to encode, each rank encodes a contiguous
    shard and the shards are all-gathered (with gradients when the encoder
    trains).  ``class_embeddings``/``forward`` are then collectives: all ranks
    must call them together, as they do in training and testing.

    Args:
        in_channels (int, optional): Visual feature width; None means the
            features are already in the embedding space (no projection).
        embed_dim (int): Joint embedding width. Defaults to 256.
        text_encoder (dict | nn.Module, optional): Config of a text encoder
            (``RobertaTextEncoder``, ``CLIPTextTransformer``) or a module.
            None requires ``embeddings``; ignored when ``embeddings`` is
            given.
        vocabulary (str | list[str] | dict | Vocabulary, optional): See
            :func:`load_vocabulary`. With ``embeddings`` it selects (and
            orders) classes of the file; None takes all of them.
        descriptions (bool | str | dict): Whether to use the vocabulary's
            descriptions (``"name, description"`` prompts), or a source of
            descriptions matched by name. Defaults to True.
        templates (str | list[str]): ``'imagenet80'``, ``'single'`` or a list
            of strings containing ``{}``. Defaults to ``'imagenet80'``.
        tau (float): Temperature, logits = cos / tau; must be > 0.
            Defaults to 0.05.
        learnable_tau (bool): Learn ``log(1 / tau)``. Defaults to False.
        max_logit_scale (float): Upper clamp of a learned ``1 / tau``, as in
            CLIP. Defaults to 100.
        background (bool): Append a learned background embedding
            (``bg_embed``) as the last class. Defaults to False.
        freeze_text_encoder (bool): Keep the text encoder frozen (no grad,
            eval mode). Defaults to True.
        cache_dir (str, optional): Folder of the disk cache of embeddings.
        embeddings (str, optional): File written by :meth:`save_embeddings`;
            replaces the text encoder.  Training then uses these fixed
            (prompt-ensembled) embeddings: there is nothing to sample from.
        shard_min_prompts (int): Smallest number of prompts that is sharded
            over ranks. Defaults to 1024.
        init_cfg (dict | list[dict], optional): Initialisation config;
            ``dict(type='Pretrained', checkpoint=..., prefix=...)`` accepts a
            converted checkpoint (with ``prefix='text_classifier.'``) or an
            official iCAR checkpoint.
    """

    def __init__(self,
                 in_channels: Optional[int] = None,
                 embed_dim: int = 256,
                 text_encoder: Optional[Union[dict, nn.Module]] = None,
                 vocabulary: Optional[Union[str, Sequence[str], dict,
                                            Vocabulary]] = None,
                 descriptions: Union[bool, str, dict] = True,
                 templates: Union[str, Sequence[str]] = 'imagenet80',
                 tau: float = 0.05,
                 learnable_tau: bool = False,
                 max_logit_scale: float = 100.0,
                 background: bool = False,
                 freeze_text_encoder: bool = True,
                 cache_dir: Optional[str] = None,
                 embeddings: Optional[str] = None,
                 shard_min_prompts: int = 1024,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not (isinstance(tau, (int, float)) and tau > 0):
            raise ValueError(f'tau must be a number > 0, got {tau!r}.')
        if text_encoder is None and embeddings is None:
            raise ValueError('TextClassifier needs a `text_encoder` config or '
                             'an `embeddings` file.')
        if text_encoder is not None and embeddings is not None:
            # a trained config evaluated with precomputed embeddings keeps
            # its text_encoder entry; the file makes the encoder unnecessary
            print_log(
                f'TextClassifier: using the embeddings file {embeddings}; '
                'the text_encoder config is not built.',
                logger='current',
                level=logging.INFO)
            text_encoder = None
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.freeze_text_encoder = freeze_text_encoder
        self.shard_min_prompts = shard_min_prompts
        self.max_logit_scale = max_logit_scale
        self.cache = EmbeddingDiskCache(cache_dir) if cache_dir else None

        self.visual_proj = (
            nn.Linear(in_channels, embed_dim, bias=False)
            if in_channels is not None else nn.Identity())
        if learnable_tau:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / tau)))
        else:
            # a buffer so it follows .to(device), but not in checkpoints
            self.register_buffer(
                'logit_scale',
                torch.tensor(math.log(1 / tau)),
                persistent=False)
        self.bg_embed = (
            nn.Parameter(torch.randn(1, embed_dim) *
                         embed_dim**-0.5) if background else None)

        self.text_encoder: Optional[BaseTextEncoder] = None
        # embeddings-file mode: all rows of the file, and the selected ones
        self._file_names: Optional[List[str]] = None
        self._file_all: Optional[torch.Tensor] = None
        self._file_embeds: Optional[torch.Tensor] = None
        self._file_meta: Dict[str, Any] = {}
        self._class_cache: Optional[Tuple[Any, torch.Tensor]] = None
        self._prompt_cache: Optional[Tuple[Any, torch.Tensor]] = None
        self._weights_fp: Optional[Tuple[Any, str]] = None
        # the classifier whose text encoder this one borrows (see
        # share_text_encoder); a plain attribute, not a submodule
        object.__setattr__(self, '_text_owner', None)
        # proxies replacing the class embeddings (set_class_proxies)
        self._class_proxies: Optional[torch.Tensor] = None
        self.embeddings_file = embeddings
        if embeddings is not None:
            self._load_embeddings_file(embeddings)
            self.templates = list(self._file_meta.get('templates', []))
        else:
            self.text_encoder = _build_text_encoder(text_encoder)
            encoder_dim = getattr(self.text_encoder, 'embed_dim', None)
            if encoder_dim != embed_dim:
                raise ValueError(
                    f'The text encoder {type(self.text_encoder).__name__} '
                    f'outputs {encoder_dim}-d embeddings but embed_dim is '
                    f'{embed_dim}.')
            if freeze_text_encoder:
                self.text_encoder.requires_grad_(False)
                self.text_encoder.eval()
            self.templates = get_templates(templates)
        self.set_vocabulary(vocabulary, descriptions=descriptions)

    # ------------------------------------------------------------------
    # vocabulary
    # ------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of vocabulary classes (without the background)."""
        return len(self.vocabulary)

    @property
    def class_names(self) -> List[str]:
        return list(self.vocabulary.names)

    def set_vocabulary(
            self,
            vocabulary: Optional[Union[str, Sequence[str], dict, Vocabulary]],
            descriptions: Union[bool, str, dict] = True,
            templates: Optional[Union[str, Sequence[str]]] = None) -> None:
        """Swap the class list, e.g. to test on classes never trained on.

        Args:
            vocabulary: See :func:`load_vocabulary`.  With an embeddings file
                the names must be classes of the file (None: all of them).
            descriptions (bool | str | dict): See :func:`load_vocabulary`.
                Defaults to True.
            templates (str | list[str], optional): New templates; None keeps
                the current ones.
        """
        self._class_cache = None
        self._prompt_cache = None
        if self._class_proxies is not None:
            # proxies belong to the old class list
            print_log(
                'TextClassifier: new vocabulary, the class proxies set with '
                'set_class_proxies() are dropped.',
                logger='current',
                level=logging.WARNING)
            self._class_proxies = None
        if self._file_names is not None:
            self._select_file_classes(vocabulary)
            return
        if vocabulary is None:
            raise ValueError('TextClassifier with a text encoder needs a '
                             '`vocabulary`.')
        if templates is not None:
            self.templates = get_templates(templates)
        self.vocabulary = load_vocabulary(vocabulary, descriptions)
        self.use_descriptions = descriptions not in (False, None)
        self.prompts: PromptSet = build_prompts(self.vocabulary,
                                                self.templates,
                                                self.use_descriptions)
        # classes the tokenizer cannot tell apart; prompts cut at max_length
        check_prompt_tokens(self.text_encoder, self.vocabulary, self.prompts,
                            type(self).__name__)
        print_log(
            f'TextClassifier vocabulary: {describe(self.vocabulary)}, '
            f'{len(self.templates)} templates, {len(self.prompts.texts)} '
            'prompts.',
            logger='current',
            level=logging.DEBUG)

    # ------------------------------------------------------------------
    # embeddings file
    # ------------------------------------------------------------------
    def _load_embeddings_file(self, path: str) -> None:
        if not osp.isfile(path):
            raise FileNotFoundError(f'Embeddings file {path} does not exist.')
        data = load_checkpoint_file(path)
        if not isinstance(data, dict) or not {'class_names', 'embeddings'
                                              } <= set(data):
            keys = sorted(data) if isinstance(data, dict) else type(data)
            raise ValueError(
                f'Embeddings file {path} must hold a dict with "class_names" '
                f'and "embeddings" (see save_embeddings), got {keys}.')
        names, embeds = list(data['class_names']), data['embeddings']
        if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2:
            raise ValueError(f'Embeddings file {path}: "embeddings" must be a '
                             '(num_classes, dim) tensor.')
        if embeds.shape[0] != len(names):
            raise ValueError(
                f'Embeddings file {path}: {len(names)} class names but '
                f'{embeds.shape[0]} embeddings.')
        if embeds.shape[1] != self.embed_dim:
            raise ValueError(
                f'Embeddings file {path} holds {embeds.shape[1]}-d '
                f'embeddings but embed_dim is {self.embed_dim}.')
        if len(set(names)) != len(names):
            dups = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f'Embeddings file {path}: duplicate class names {dups[:10]}.')
        self._file_names = names
        self._file_all = F.normalize(embeds.float(), dim=-1)
        self._file_meta = dict(data.get('meta') or {})
        self._file_meta.setdefault('templates',
                                   list(data.get('templates', [])))

    def _select_file_classes(self, vocabulary: Any) -> None:
        if vocabulary is None:
            names = list(self._file_names)
        else:
            names = load_vocabulary(vocabulary, descriptions=False).names
        index = {name: i for i, name in enumerate(self._file_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(
                f'{len(unknown)} classes are not in the embeddings file '
                f'{self.embeddings_file}: {unknown[:10]}. A new class needs '
                'the text encoder.')
        rows = torch.tensor([index[n] for n in names], dtype=torch.long)
        self._file_embeds = self._file_all[rows]
        self.vocabulary = Vocabulary(names, [], str(self.embeddings_file))
        self.use_descriptions = False

    def save_embeddings(self, path: str) -> None:
        """Save the eval-mode class embeddings for ``embeddings=path``.

        The file holds ``class_names``, ``embeddings`` (C, D), ``templates``
        and ``meta`` (encoder signature, weights sha256, descriptions).

        Args:
            path (str): Output file (written atomically).
        """
        if self._file_names is not None:
            embeds, meta = self._file_embeds, dict(self._file_meta)
        else:
            embeds = self._eval_embeddings(collective=False)
            meta = dict(
                encoder=self.text_encoder.cache_signature(),
                weights_sha256=self._weights_fingerprint(),
                descriptions=self.use_descriptions,
                vocabulary_source=self.vocabulary.source,
                num_prompts=len(self.prompts.texts))
        meta['templates'] = list(self.templates)
        save_checkpoint_file(
            dict(
                class_names=list(self.vocabulary.names),
                embeddings=embeds.detach().float().cpu(),
                templates=list(self.templates),
                meta=meta), path)

    # ------------------------------------------------------------------
    # one text encoder for several classifiers
    # ------------------------------------------------------------------
    @property
    def text_owner(self) -> Optional['TextClassifier']:
        """The classifier whose text encoder this one uses, or None."""
        return self._text_owner

    def share_text_encoder(self, owner: 'TextClassifier') -> None:
        """Use ``owner``'s text encoder instead of an own copy.

        For heads that classify against the same vocabulary with their own
        visual projections (the stages of a cascade): one RoBERTa instead of
        one per head.  The encoder stays a submodule of ``owner`` only, so it
        is in the state dict, the optimizer and ``.to()`` once; this
        classifier's own ``text_encoder.*`` keys disappear from checkpoints
        (older checkpoints that have them load with "unexpected keys").
        While the prompts of both classifiers are the same, the prompt and
        class embeddings are computed (and cached) by ``owner`` once.

        Args:
            owner (TextClassifier): A classifier with a text encoder of the
                same embedding width and the same freezing.
        """
        name = type(self).__name__
        if not isinstance(owner, TextClassifier) or owner is self:
            raise TypeError(f'{name}.share_text_encoder needs another '
                            f'TextClassifier, got {type(owner).__name__}')
        if owner.text_encoder is None or owner._text_owner is not None:
            raise ValueError(f'{name}.share_text_encoder: the owner must have '
                             'a text encoder of its own (not an embeddings '
                             'file, not a borrowed one)')
        if self._file_names is not None:
            raise ValueError(f'{name}.share_text_encoder: this classifier '
                             f'reads the embeddings file '
                             f'{self.embeddings_file}; it has no encoder')
        if owner.embed_dim != self.embed_dim or \
                owner.freeze_text_encoder != self.freeze_text_encoder:
            raise ValueError(
                f'{name}.share_text_encoder: embed_dim / '
                f'freeze_text_encoder differ ({self.embed_dim}, '
                f'{self.freeze_text_encoder}) vs ({owner.embed_dim}, '
                f'{owner.freeze_text_encoder})')
        if 'text_encoder' in self._modules:
            del self._modules['text_encoder']
        object.__setattr__(self, 'text_encoder', owner.text_encoder)
        object.__setattr__(self, '_text_owner', owner)
        self._class_cache = None
        self._prompt_cache = None

    def _owner_has_same_prompts(self) -> bool:
        owner = self._text_owner
        if owner is None:
            return False
        memo = getattr(self, '_same_prompts_memo', None)
        if memo is None or memo[0] is not self.prompts or \
                memo[1] is not owner.prompts:
            same = (self.prompts.texts == owner.prompts.texts
                    and torch.equal(self.prompts.counts, owner.prompts.counts))
            memo = (self.prompts, owner.prompts, same)
            object.__setattr__(self, '_same_prompts_memo', memo)
        return memo[2]

    # ------------------------------------------------------------------
    # encoding and caches
    # ------------------------------------------------------------------
    @property
    def _encoder_trainable(self) -> bool:
        return self.text_encoder is not None and not self.freeze_text_encoder

    def _encoder_state(self) -> Any:
        """Identity of the current encoder weights.

        The storage and autograd version counter of every tensor change with
        any in-place update (optimizer step, ``load_state_dict``) and with
        device moves, so a cached embedding can never outlive the weights it
        was computed from, whichever way they were changed.
        """
        return tuple(
            (t.data_ptr(), t._version)
            for t in self.text_encoder.state_dict(keep_vars=True).values())

    def _weights_fingerprint(self) -> str:
        state = self._encoder_state()
        if self._weights_fp is None or self._weights_fp[0] != state:
            fp = state_dict_fingerprint(self.text_encoder.state_dict().items())
            self._weights_fp = (state, fp)
        return self._weights_fp[1]

    def _cache_key(self, kind: str) -> str:
        return json_fingerprint(
            dict(
                format=_CACHE_FORMAT,
                kind=kind,
                encoder=self.text_encoder.cache_signature(),
                weights=self._weights_fingerprint(),
                names=self.vocabulary.names,
                descriptions=(self.vocabulary.descriptions
                              if self.use_descriptions else None),
                templates=self.templates,
                prompts=self.prompts.texts,
                counts=self.prompts.counts.tolist()))

    @property
    def _device(self) -> torch.device:
        return self.logit_scale.device

    def _sharded(self, num_texts: int, collective: bool) -> bool:
        return (collective and get_dist_info()[1] > 1
                and num_texts >= self.shard_min_prompts)

    def _encode(self, texts: List[str], differentiable: bool,
                sharded: bool) -> torch.Tensor:
        if sharded:
            return encode_sharded(self.text_encoder.encode, texts,
                                  self.embed_dim, self._device, differentiable)
        return self.text_encoder.encode(texts).float()

    def _cached(self, kind: str, shape: Tuple[int, int], compute: Any,
                sharded: bool) -> torch.Tensor:
        """Disk-cache lookup around ``compute()`` (no grad)."""
        key = self._cache_key(kind) if self.cache is not None else None
        embeds = self.cache.load(key, kind, shape) if key else None
        # every rank must take the same branch when computing is a
        # collective, or the ranks that missed wait forever
        if sharded and not all_ranks_true(embeds is not None):
            embeds = None
        if embeds is not None:
            print_log(
                f'Loaded {kind} text embeddings {tuple(shape)} from '
                f'{self.cache.path(key, kind)}',
                logger='current',
                level=logging.INFO)
            return embeds.to(self._device)
        print_log(
            f'Encoding {len(self.prompts.texts)} prompts of '
            f'{self.num_classes} classes with '
            f'{type(self.text_encoder).__name__}'
            f'{" (sharded over ranks)" if sharded else ""}',
            logger='current',
            level=logging.INFO)
        # cached embeddings must not carry dropout noise, even when asked
        # for (save_embeddings) while a trainable encoder is in train mode
        was_training = self.text_encoder.training
        self.text_encoder.eval()
        try:
            with torch.no_grad():
                embeds = compute()
        finally:
            self.text_encoder.train(was_training)
        rank, world_size = get_dist_info()
        local_rank = int(os.environ.get('LOCAL_RANK', rank))
        if key and (world_size == 1 or local_rank == 0):
            self.cache.save(
                key, kind, embeds,
                dict(
                    classes=self.num_classes,
                    prompts=len(self.prompts.texts),
                    encoder=type(self.text_encoder).__name__))
        return embeds

    def _prompt_embeddings(self, collective: bool = True) -> torch.Tensor:
        """Normalised embeddings of every prompt (frozen encoder), (P, D)."""
        if self._owner_has_same_prompts():
            return self._text_owner._prompt_embeddings(collective).to(
                self._device)
        state = self._encoder_state()
        if self._prompt_cache is not None and self._prompt_cache[0] == state:
            return self._prompt_cache[1].to(self._device)
        texts = self.prompts.texts
        sharded = self._sharded(len(texts), collective)
        embeds = self._cached(
            'prompt', (len(texts), self.embed_dim),
            lambda: F.normalize(self._encode(texts, False, sharded), dim=-1),
            sharded)
        self._prompt_cache = (state, embeds)
        return embeds

    def _eval_embeddings(self, collective: bool = True) -> torch.Tensor:
        """Prompt-ensembled class embeddings, (C, D), no grad."""
        if self._owner_has_same_prompts():
            return self._text_owner._eval_embeddings(collective).to(
                self._device)
        state = self._encoder_state()
        if self._class_cache is not None and self._class_cache[0] == state:
            return self._class_cache[1].to(self._device)
        if self._prompt_cache is not None and self._prompt_cache[0] == state:
            # frozen training already encoded every prompt
            embeds = self.prompts.ensemble(self._prompt_cache[1])
        else:
            texts = self.prompts.texts
            sharded = self._sharded(len(texts), collective)
            embeds = self._cached(
                'class', (self.num_classes, self.embed_dim),
                lambda: self.prompts.ensemble(
                    self._encode(texts, False, sharded)), sharded)
        self._class_cache = (state, embeds)
        return embeds.to(self._device)

    def _train_embeddings(self) -> torch.Tensor:
        """One random prompt per class, (C, D), normalised."""
        if not self._encoder_trainable:
            picks = self.prompts.sample().to(self._device)
            return self._prompt_embeddings()[picks]
        # Under sharding each class's draw is made by the rank that encodes
        # it, and the gather hands every rank the same result: no need to
        # agree on the draws beforehand.
        picks = self.prompts.sample()
        sharded = self._sharded(len(picks), collective=True)
        texts = [self.prompts.texts[i] for i in picks.tolist()]
        return F.normalize(self._encode(texts, True, sharded), dim=-1)

    # ------------------------------------------------------------------
    # proxies replacing the text embeddings (e.g. InMaP vision proxies)
    # ------------------------------------------------------------------
    @property
    def class_proxies(self) -> Optional[torch.Tensor]:
        """The proxies set by :meth:`set_class_proxies` (unit-norm rows,
        ``(C, D)`` or ``(C + 1, D)``), or None."""
        return self._class_proxies

    def set_class_proxies(self, proxies: Optional[torch.Tensor]) -> None:
        """Replace the class embeddings by given proxies, or restore them.

        Used to evaluate with vision proxies learned by InMaP
        (:mod:`icar_dense.inmap`): while set, :meth:`class_embeddings`,
        :meth:`all_class_embeddings` and ``forward`` use these rows instead
        of the text embeddings, in eval and training mode alike.  The text
        embeddings and their in-memory cache are untouched: ``None`` brings
        them back without re-encoding.  The proxies are not saved in
        checkpoints and :meth:`set_vocabulary` drops them.

        Args:
            proxies (Tensor | None): ``(C, D)`` proxies of the vocabulary
                classes (rows in vocabulary order, ``D = embed_dim``), or
                ``(C + 1, D)`` with the background proxy last when the
                classifier has ``background=True`` (else its learned
                background embedding is kept).  Rows are L2-normalised.
                None removes the override.

        Raises:
            TypeError: If ``proxies`` is not a floating point tensor.
            ValueError: On a wrong shape or non-finite / zero rows.
        """
        if proxies is None:
            self._class_proxies = None
            return
        if not isinstance(proxies, torch.Tensor) or \
                not proxies.is_floating_point():
            raise TypeError('TextClassifier.set_class_proxies: proxies must '
                            'be a floating point tensor of shape (C, D), got '
                            f'{getattr(proxies, "dtype", type(proxies))}')
        num = self.num_classes
        rows = (num, num + 1) if self.bg_embed is not None else (num, )
        if proxies.dim() != 2 or proxies.shape[0] not in rows or \
                proxies.shape[1] != self.embed_dim:
            hint = ''
            if proxies.dim() == 2 and proxies.shape[1] in rows and \
                    proxies.shape[0] == self.embed_dim:
                hint = (' (it looks like (D, C), the layout of InMaP '
                        'proxies; pass proxies.t())')
            want = ' or '.join(f'({r}, {self.embed_dim})' for r in rows)
            raise ValueError(
                f'TextClassifier.set_class_proxies: proxies must have shape '
                f'{want} for {num} classes (from '
                f'{self.vocabulary.source}) and embed_dim={self.embed_dim}'
                f'{" plus the background" if len(rows) == 2 else ""}, got '
                f'{tuple(proxies.shape)}{hint}')
        proxies = proxies.detach().float()
        norms = torch.linalg.vector_norm(proxies, dim=1)
        if not bool(torch.isfinite(proxies).all()) or bool((norms == 0).any()):
            raise ValueError('TextClassifier.set_class_proxies: every proxy '
                             'must be finite and non-zero')
        self._class_proxies = (proxies / norms[:, None]).to(self._device)

    def class_embeddings(self) -> torch.Tensor:
        """Unit-norm class embeddings without the background, (C, D).

        Training mode: one random prompt per class (differentiable when the
        encoder trains).  Eval mode: the prompt ensemble, cached.  While
        proxies are set (:meth:`set_class_proxies`): those proxies.
        """
        if self._class_proxies is not None:
            return self._class_proxies[:self.num_classes].to(self._device)
        if self._file_names is not None:
            return self._file_embeds.to(self._device)
        if self.training:
            return self._train_embeddings()
        return self._eval_embeddings()

    def train(self, mode: bool = True) -> 'TextClassifier':
        super().train(mode)
        if self.text_encoder is not None and self.freeze_text_encoder:
            # no dropout in a frozen encoder: its embeddings are cached
            self.text_encoder.eval()
        if mode and self._encoder_trainable:
            # training will change the weights: eval embeddings are stale
            self._class_cache = None
            self._prompt_cache = None
        return self

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    @property
    def tau(self) -> float:
        return 1.0 / self.scale().item()

    def scale(self) -> torch.Tensor:
        """``1 / tau`` (clamped to ``max_logit_scale`` when learned)."""
        scale = self.logit_scale.exp()
        if isinstance(self.logit_scale, nn.Parameter):
            scale = scale.clamp(max=self.max_logit_scale)
        return scale

    def embed_visual(self, visual_feats: torch.Tensor) -> torch.Tensor:
        """Project and L2-normalise visual features, (..., embed_dim)."""
        return F.normalize(self.visual_proj(visual_feats), dim=-1)

    def all_class_embeddings(self) -> torch.Tensor:
        """Class embeddings with the background appended, (C(+1), D)."""
        embeds = self.class_embeddings()
        proxies = self._class_proxies
        if proxies is not None and proxies.shape[0] > self.num_classes:
            # background proxy given with the class proxies
            return torch.cat([embeds, proxies[-1:].to(embeds)])
        if self.bg_embed is not None:
            bg = F.normalize(self.bg_embed, dim=-1).to(embeds.dtype)
            embeds = torch.cat([embeds, bg])
        return embeds

    def forward(self, visual_feats: torch.Tensor) -> torch.Tensor:
        """Cosine logits.

        Args:
            visual_feats (torch.Tensor): Shape (..., in_channels), or
                (..., embed_dim) when ``in_channels`` is None.

        Returns:
            torch.Tensor: Logits (..., C), (..., C + 1) with background (last).
        """
        x = self.embed_visual(visual_feats)
        weights = self.all_class_embeddings().to(x.dtype)
        return (x @ weights.t()) * self.scale().to(x.dtype)

    def forward_dense(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits for channel-first maps: (N, C_in, *S) -> (N, C(+1), *S)."""
        x = feats.movedim(1, -1)
        return self(x).movedim(-1, 1)

    # ------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------
    def init_weights(self) -> None:
        """Initialise; ``Pretrained`` init_cfg entries are loaded here.

        The loading is done by :meth:`load_checkpoint` rather than mmengine's
        ``PretrainedInit`` so that official iCAR files are recognised, a
        visual projection of the wrong width is skipped instead of failing,
        and files are read with ``weights_only=True``.
        """
        cfgs = self.init_cfg or []
        cfgs = [cfgs] if isinstance(cfgs, dict) else list(cfgs)
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        if pretrained:
            original = self.init_cfg
            self.init_cfg = [c for c in cfgs if c not in pretrained] or None
            try:
                super().init_weights()
            finally:
                self.init_cfg = original
            for cfg in pretrained:
                self.load_checkpoint(
                    cfg['checkpoint'],
                    prefix=cfg.get('prefix'),
                    map_location=cfg.get('map_location', 'cpu'))
        else:
            super().init_weights()
        self._class_cache = None
        self._prompt_cache = None

    def load_checkpoint(self,
                        path: str,
                        prefix: Optional[str] = None,
                        map_location: str = 'cpu') -> None:
        """Load a converted or an official iCAR checkpoint.

        Args:
            path (str): ``.pth`` file. A converted file holds ``state_dict``
                (``prefix`` selects our keys, e.g. ``'text_classifier.'``);
                an official iCAR file holds ``model`` with
                ``sentence_model.*`` and ``visual_model.projector.weight``
                (``prefix`` is then ignored).
            prefix (str, optional): Key prefix of this module.
            map_location (str): Where to load tensors. Defaults to 'cpu'.
        """
        state = unwrap_state_dict(
            load_checkpoint_file(path, map_location), path)
        rebuilt = []
        if any(k.startswith(ICAR_TEXT) for k in state):
            state = convert_icar_text_classifier(state, rebuilt)
            layout = 'official iCAR'
        else:
            if prefix:
                state = {
                    k[len(prefix):]: v
                    for k, v in state.items() if k.startswith(prefix)
                }
            layout = 'converted'
        if not state:
            raise KeyError(
                f'Checkpoint {path} has no TextClassifier weights'
                f'{f" under prefix {prefix!r}" if prefix else ""}: expected '
                'an official iCAR file (model.sentence_model.*) or a '
                'converted one (state_dict.text_classifier.*).')
        self._load_filtered(state, path, layout, rebuilt)

    def fit_checkpoint_weights(
            self, state: Dict[str, torch.Tensor],
            rebuilt: Optional[List[str]] = None
    ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """The entries of a ``TextClassifier``-keyed state dict (e.g. from
        :func:`convert_icar_text_classifier`) this classifier can load, and
        notes on what was left out: the text tower when the classifier reads
        an embeddings file, and tensors whose shape does not fit (they keep
        their initialisation).  RoBERTa's ``position_ids`` / ``pooler.*``
        (older checkpoints) are left out and appended to ``rebuilt`` (for
        the caller's "rebuilt / unused" line)."""
        own = self.state_dict()
        notes = []
        no_tower = self.text_encoder is None
        if no_tower and any(k.startswith('text_encoder.') for k in state):
            notes.append('the text classifier reads an embeddings file: '
                         'text tower weights ignored')
        kept = OrderedDict()
        for key, value in state.items():
            if key.startswith(LEGACY_TEXT_KEYS) and key not in own:
                if rebuilt is not None:
                    rebuilt.append(key)
                continue
            if no_tower and key.startswith('text_encoder.'):
                continue
            if key in own and own[key].shape != value.shape:
                notes.append(f'{key} {tuple(value.shape)} does not fit '
                             f'{tuple(own[key].shape)}: kept the '
                             'initialisation')
                continue
            kept[key] = value
        return kept, notes

    def _load_filtered(self, state: Dict[str, torch.Tensor], path: str,
                       layout: str,
                       rebuilt: Optional[List[str]] = None) -> None:
        own = self.state_dict()
        rebuilt = list(rebuilt or [])
        rebuilt += [
            k for k in state if k.startswith(LEGACY_TEXT_KEYS) and k not in own
        ]
        state = {k: v for k, v in state.items() if k not in rebuilt}
        notes = []
        for key in [k for k in state if k.startswith('visual_proj.')]:
            if key not in own or own[key].shape != state[key].shape:
                # e.g. a segmentation decode feature narrower than the Swin
                # output the official projection was trained on
                shape = tuple(own[key].shape) if key in own else None
                notes.append(f'{key} {tuple(state[key].shape)} does not fit '
                             f'{shape}: visual_proj keeps its initialisation')
                state.pop(key)
        shared_keys = 0
        if self._text_owner is not None:
            # the classifier that owns the shared encoder loads them
            shared_keys = sum(
                1 for k in state if k.startswith('text_encoder.'))
            state = {
                k: v
                for k, v in state.items() if not k.startswith('text_encoder.')
            }
        elif self.text_encoder is None:
            dropped = [k for k in state if k.startswith('text_encoder.')]
            for key in dropped:
                state.pop(key)
            if dropped:
                notes.append(f'{len(dropped)} text_encoder keys ignored (the '
                             'classifier uses an embeddings file)')
        mismatched = [
            f'{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}'
            for k, v in state.items() if k in own and v.shape != own[k].shape
        ]
        if mismatched:
            raise ValueError(f'Checkpoint {path} ({layout}) does not fit this '
                             f'TextClassifier: {mismatched[:5]}.')
        missing, unexpected = self.load_state_dict(state, strict=False)
        loaded = len(state) - len(unexpected)
        if loaded == 0 and not notes and not shared_keys:
            raise KeyError(f'No key of checkpoint {path} ({layout}) matches '
                           f'this TextClassifier; unexpected: '
                           f'{unexpected[:5]}.')
        # recognised buffers / unused weights: one line, not "unexpected"
        unexpected = log_rebuilt_unused(f'TextClassifier ({path})',
                                        rebuilt + list(unexpected))
        text_missing = [k for k in missing if k.startswith('text_encoder.')]
        msg = (f'TextClassifier: loaded {loaded} tensors from {path} '
               f'({layout})')
        if text_missing:
            msg += (f'; text encoder keys missing: {len(text_missing)} '
                    f'(e.g. {text_missing[:3]})')
        if unexpected:
            msg += f'; unexpected keys: {unexpected[:5]}'
        if shared_keys:
            msg += (f'; {shared_keys} text_encoder keys skipped (the encoder '
                    'is shared, its owner loads them)')
        for note in notes:
            msg += f'; {note}'
        print_log(
            msg,
            logger='current',
            level=logging.WARNING
            if text_missing or unexpected or notes else logging.INFO)

    def extra_repr(self) -> str:
        encoder = (
            type(self.text_encoder).__name__ if self.text_encoder is not None
            else f'embeddings={self.embeddings_file}')
        if self._text_owner is not None:
            encoder += ' (shared)'
        proxies = (''
                   if self._class_proxies is None else ', class_proxies=set')
        return (f'classes={self.num_classes}, embed_dim={self.embed_dim}, '
                f'templates={len(self.templates)}, tau={self.tau:.4g}, '
                f'background={self.bg_embed is not None}, {encoder}'
                f'{proxies}')

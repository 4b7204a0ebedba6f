# Copyright (c) icar_dense contributors. All rights reserved.
"""The text side of a classifier: from a vocabulary to class embeddings.

A :class:`TextBank` holds the vocabulary, its prompts (templates x
descriptions), the text encoder or an embeddings file, and the caches; it
produces the unit-norm ``(C, D)`` class embeddings a
:class:`~icar_dense.models.text.TextClassifier` compares visual features
with:

* training mode: one random prompt per class per call (differentiable when
  the encoder trains); a frozen encoder encodes all prompts once and only
  the drawn indices change per step;
* eval mode: the normalised mean of the normalised embeddings of all prompts
  of a class, cached in memory and, with ``cache_dir``, on disk under a
  sha256 of the encoder weights, tokenizer, vocabulary and templates;
* with an embeddings file: the file's rows of the vocabulary's classes.

With torch.distributed initialised (world size > 1) and at least
``shard_min_prompts`` prompts to encode, each rank encodes a contiguous
shard and the shards are all-gathered (with gradients when the encoder
trains): :meth:`TextBank.class_embeddings` is then a collective.

Why a bank is not an ``nn.Module``: several classifiers use one bank (the
stages of a cascade, a segmentor's auxiliary head), and its encoder's
weights must be in the state dict, the optimizer and ``.to()`` once, under
the keys of every iCAR checkpoint (``text_classifier.text_encoder.*``).  So
the classifier that builds the bank, its ``owner``, registers the encoder as
its submodule ``text_encoder``; the bank and its borrowers hold references.
"""
import copy
import logging
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from icar_dense.registry import shared_models_registry
from .cache import EmbeddingDiskCache, json_fingerprint, state_dict_fingerprint
from .distributed import all_ranks_true, encode_sharded, get_dist_info
from .embeddings_file import EmbeddingsFile, write_embeddings_file
from .prompt_check import check_prompt_tokens
from .templates import PromptSet, build_prompts, get_templates
from .vocabulary import Vocabulary, describe, load_vocabulary

__all__ = ['TextBank', 'build_text_encoder']

# Bumped when the way prompts become embeddings changes, so that old disk
# cache entries are never read by new code.
_CACHE_FORMAT = 1

VocabularySpec = Optional[Union[str, Sequence[str], dict, Vocabulary]]


def build_text_encoder(
        cfg: Union[dict, nn.Module, Callable[[], nn.Module]]) -> nn.Module:
    """A text encoder from its config, the module itself, or a callable
    returning it (a builder shared by several classifiers)."""
    if isinstance(cfg, nn.Module):
        return cfg
    if callable(cfg):
        return cfg()
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


class TextBank:
    """Vocabulary, prompts, text encoder (or embeddings file) and caches.

    Args:
        embed_dim (int): Width of the class embeddings.
        text_encoder (dict | nn.Module | Callable, optional): Config of a
            text encoder, a module, or a callable returning the module;
            ignored when ``embeddings`` is given.
        embeddings (str, optional): Embeddings file (see
            :mod:`.embeddings_file`) replacing the text encoder.
        vocabulary, descriptions, templates: See
            ``TextClassifier.set_vocabulary``.
        freeze_text_encoder (bool): Keep the encoder frozen. Defaults to
            True.
        cache_dir (str, optional): Folder of the disk cache of embeddings.
        shard_min_prompts (int): Smallest number of prompts sharded over
            ranks. Defaults to 1024.
        name (str): Who uses the bank, for messages.
    """

    def __init__(self,
                 embed_dim: int,
                 text_encoder: Optional[Union[dict, nn.Module]] = None,
                 embeddings: Optional[str] = None,
                 vocabulary: VocabularySpec = None,
                 descriptions: Union[bool, str, dict] = True,
                 templates: Union[str, Sequence[str]] = 'imagenet80',
                 freeze_text_encoder: bool = True,
                 cache_dir: Optional[str] = None,
                 shard_min_prompts: int = 1024,
                 name: str = 'TextClassifier') -> None:
        if text_encoder is None and embeddings is None:
            raise ValueError(f'{name} needs a `text_encoder` config or '
                             'an `embeddings` file.')
        if text_encoder is not None and embeddings is not None:
            # a trained config evaluated with precomputed embeddings keeps
            # its text_encoder entry; the file makes the encoder unnecessary
            print_log(
                f'{name}: using the embeddings file {embeddings}; '
                'the text_encoder config is not built.',
                logger='current',
                level=logging.INFO)
            text_encoder = None
        self.name = name
        self.embed_dim = embed_dim
        self.freeze_text_encoder = freeze_text_encoder
        self.shard_min_prompts = shard_min_prompts
        self.cache = EmbeddingDiskCache(cache_dir) if cache_dir else None
        # the classifier whose state dict holds the encoder (it sets this)
        self.owner: Optional[nn.Module] = None
        self.embeddings_file = embeddings
        self.file: Optional[EmbeddingsFile] = None
        self.text_encoder: Optional[nn.Module] = None
        self._file_embeds: Optional[torch.Tensor] = None
        self.invalidate()
        if embeddings is not None:
            self.file = EmbeddingsFile(embeddings, embed_dim)
            self.templates = self.file.templates
        else:
            self.text_encoder = build_text_encoder(text_encoder)
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
        return len(self.vocabulary)

    @property
    def class_names(self) -> List[str]:
        return list(self.vocabulary.names)

    def set_vocabulary(self,
                       vocabulary: VocabularySpec,
                       descriptions: Union[bool, str, dict] = True,
                       templates: Optional[Union[str, Sequence[str]]] = None
                       ) -> None:
        """See ``TextClassifier.set_vocabulary``."""
        self.invalidate()
        if self.file is not None:
            self.vocabulary, self._file_embeds = self.file.select(vocabulary)
            self.use_descriptions = False
            return
        if vocabulary is None:
            raise ValueError(f'{self.name} with a text encoder needs a '
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
                            self.name)
        print_log(
            f'{self.name} vocabulary: {describe(self.vocabulary)}, '
            f'{len(self.templates)} templates, {len(self.prompts.texts)} '
            'prompts.',
            logger='current',
            level=logging.DEBUG)

    def same_prompts(self, other: 'TextBank') -> bool:
        """Whether ``other`` gives the same embeddings (same encoder or
        file, same classes, same prompts)."""
        if self.text_encoder is not other.text_encoder or \
                self.file is not other.file:
            return False
        if self.file is not None:
            return self.vocabulary.names == other.vocabulary.names
        return (self.prompts.texts == other.prompts.texts
                and torch.equal(self.prompts.counts, other.prompts.counts))

    def fork(self) -> 'TextBank':
        """A bank over the same encoder (or file), disk cache and owner,
        with its own vocabulary (a copy of this one's until changed) and
        in-memory caches: for a borrower that sets its own vocabulary."""
        twin = copy.copy(self)
        twin.invalidate()
        return twin

    # ------------------------------------------------------------------
    # class embeddings
    # ------------------------------------------------------------------
    @property
    def encoder_trainable(self) -> bool:
        return self.text_encoder is not None and not self.freeze_text_encoder

    def invalidate(self) -> None:
        """Forget the in-memory embeddings (the weights were reset)."""
        self._class_cache: Optional[Tuple[Any, torch.Tensor]] = None
        self._prompt_cache: Optional[Tuple[Any, torch.Tensor]] = None
        self._weights_fp: Optional[Tuple[Any, str]] = None

    def class_embeddings(self, training: bool,
                         device: torch.device) -> torch.Tensor:
        """Unit-norm class embeddings, (C, D), on ``device``: one random
        prompt per class when ``training``, else the prompt ensemble."""
        if self.file is not None:
            return self._file_embeds.to(device)
        if training:
            return self._train_embeddings(device)
        return self._eval_embeddings(device)

    def save_embeddings(self, path: str, device: torch.device) -> None:
        """Save the eval-mode class embeddings for ``embeddings=path``."""
        if self.file is not None:
            embeds, meta = self._file_embeds, dict(self.file.meta)
        else:
            embeds = self._eval_embeddings(device, collective=False)
            meta = dict(
                encoder=self.text_encoder.cache_signature(),
                weights_sha256=self._weights_fingerprint(),
                descriptions=self.use_descriptions,
                vocabulary_source=self.vocabulary.source,
                num_prompts=len(self.prompts.texts))
        write_embeddings_file(path, self.vocabulary.names, embeds,
                              self.templates, meta)

    # ------------------------------------------------------------------
    # encoding and caches
    # ------------------------------------------------------------------
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

    def _sharded(self, num_texts: int, collective: bool) -> bool:
        return (collective and get_dist_info()[1] > 1
                and num_texts >= self.shard_min_prompts)

    def _encode(self, texts: List[str], differentiable: bool, sharded: bool,
                device: torch.device) -> torch.Tensor:
        if sharded:
            return encode_sharded(self.text_encoder.encode, texts,
                                  self.embed_dim, device, differentiable)
        return self.text_encoder.encode(texts).float()

    def _cached(self, kind: str, shape: Tuple[int, int],
                compute: Callable[[], torch.Tensor], sharded: bool,
                device: torch.device) -> torch.Tensor:
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
            return embeds.to(device)
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

    def _prompt_embeddings(self,
                           device: torch.device,
                           collective: bool = True) -> torch.Tensor:
        """Normalised embeddings of every prompt (frozen encoder), (P, D)."""
        state = self._encoder_state()
        if self._prompt_cache is not None and self._prompt_cache[0] == state:
            return self._prompt_cache[1].to(device)
        texts = self.prompts.texts
        sharded = self._sharded(len(texts), collective)
        embeds = self._cached(
            'prompt', (len(texts), self.embed_dim), lambda: F.normalize(
                self._encode(texts, False, sharded, device), dim=-1),
            sharded, device)
        self._prompt_cache = (state, embeds)
        return embeds

    def _eval_embeddings(self,
                         device: torch.device,
                         collective: bool = True) -> torch.Tensor:
        """Prompt-ensembled class embeddings, (C, D), no grad."""
        state = self._encoder_state()
        if self._class_cache is not None and self._class_cache[0] == state:
            return self._class_cache[1].to(device)
        if self._prompt_cache is not None and self._prompt_cache[0] == state:
            # frozen training already encoded every prompt
            embeds = self.prompts.ensemble(self._prompt_cache[1])
        else:
            texts = self.prompts.texts
            sharded = self._sharded(len(texts), collective)
            embeds = self._cached(
                'class', (self.num_classes, self.embed_dim),
                lambda: self.prompts.ensemble(
                    self._encode(texts, False, sharded, device)), sharded,
                device)
        self._class_cache = (state, embeds)
        return embeds.to(device)

    def _train_embeddings(self, device: torch.device) -> torch.Tensor:
        """One random prompt per class, (C, D), normalised."""
        if not self.encoder_trainable:
            picks = self.prompts.sample().to(device)
            return self._prompt_embeddings(device)[picks]
        # Under sharding each class's draw is made by the rank that encodes
        # it, and the gather hands every rank the same result: no need to
        # agree on the draws beforehand.
        picks = self.prompts.sample()
        sharded = self._sharded(len(picks), collective=True)
        texts = [self.prompts.texts[i] for i in picks.tolist()]
        return F.normalize(
            self._encode(texts, True, sharded, device), dim=-1)

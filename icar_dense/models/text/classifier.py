# Copyright (c) icar_dense contributors. All rights reserved.
"""The cosine classifier whose class weights come from a text bank.

One module serves the detection box head, the segmentation pixel classifier
and the video classifier: visual features are projected to the joint space,
both sides are L2-normalised and the logits are ``cos / tau``.  The class
embeddings come from a :class:`~icar_dense.models.text.bank.TextBank`
(vocabulary, prompts, text encoder, caches) that the classifier owns or
borrows from another classifier (:meth:`TextClassifier.share`): heads that
classify against one vocabulary run one text tower.  Size: ~400 lines, a
quarter of them the documentation of the config keys every head passes.
"""
import logging
import math
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule

from icar_dense.registry import register_shared_model
from .bank import TextBank, VocabularySpec
from .loading import TextClassifierLoading
from .proxies import unit_proxies

__all__ = ['TextClassifier']


def _from_bank(name: str, doc: str) -> property:
    """A read-only attribute of the classifier's current bank."""
    return property(lambda self: getattr(self.bank, name), doc=doc)


@register_shared_model()
class TextClassifier(TextClassifierLoading, BaseModule):
    """Cosine classifier with class embeddings from a text encoder.

    ``forward`` maps visual features ``(..., in_channels)`` to logits
    ``(..., C)`` (``C + 1`` with ``background``; the background is the last
    class, like mmdet's background index ``num_classes``).

    The class embeddings (see :mod:`~icar_dense.models.text.bank`): in
    training mode one random prompt (template x description) per class per
    call; in eval mode the prompt ensemble, cached in memory and with
    ``cache_dir`` on disk; sharded over ranks when torch.distributed runs,
    which makes ``class_embeddings``/``forward`` collectives.  While
    proxies are set (:meth:`set_class_proxies`) they replace them.

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
                 vocabulary: VocabularySpec = None,
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
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.max_logit_scale = max_logit_scale
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
        # proxies replacing the class embeddings (set_class_proxies)
        self._class_proxies: Optional[torch.Tensor] = None
        bank = TextBank(embed_dim, text_encoder, embeddings, vocabulary,
                        descriptions, templates, freeze_text_encoder,
                        cache_dir, shard_min_prompts, type(self).__name__)
        bank.owner = self
        self._bank = bank
        # registered here: the encoder's weights are this classifier's
        # ``text_encoder.*`` (None with an embeddings file)
        self.text_encoder = bank.text_encoder

    # ------------------------------------------------------------------
    # the text bank
    # ------------------------------------------------------------------
    @property
    def bank(self) -> TextBank:
        """The text bank giving the class embeddings (own or borrowed)."""
        return self._bank

    vocabulary = _from_bank('vocabulary', 'The classes, a ``Vocabulary``.')
    prompts = _from_bank('prompts', 'The ``PromptSet`` of the vocabulary.')
    templates = _from_bank('templates', 'The prompt templates.')
    use_descriptions = _from_bank('use_descriptions',
                                  'Whether prompts use descriptions.')
    embeddings_file = _from_bank('embeddings_file',
                                 'The embeddings file read, or None.')
    cache = _from_bank('cache', 'The disk cache of embeddings, or None.')
    freeze_text_encoder = _from_bank('freeze_text_encoder',
                                     'Whether the text encoder is frozen.')
    shard_min_prompts = _from_bank('shard_min_prompts',
                                   'Fewest prompts sharded over ranks.')
    class_names = _from_bank('class_names', 'The class names, in order.')
    num_classes = _from_bank('num_classes',
                             'Number of classes (without the background).')

    @property
    def text_owner(self) -> Optional['TextClassifier']:
        """The classifier whose text encoder this one uses, or None."""
        owner = self._bank.owner
        return None if owner is self else owner

    def share(self, owner: 'TextClassifier') -> None:
        """Use ``owner``'s text bank (and so its encoder) instead of an own.

        One text tower for heads with their own projections (the stages of
        a cascade).  The encoder stays a submodule of ``owner`` only (state
        dict, optimizer, ``.to()``): this classifier's ``text_encoder``
        becomes None and older checkpoints with its ``text_encoder.*`` keys
        load with "unexpected keys".  With the same prompts the two share
        one bank (encoded and cached once); another vocabulary is kept, over
        ``owner``'s encoder.  Projection, tau, background and proxies stay
        per classifier.

        Args:
            owner (TextClassifier): A classifier with a text encoder of its
                own, of the same embedding width and the same freezing.
        """
        name = type(self).__name__
        if not isinstance(owner, TextClassifier) or owner is self:
            raise TypeError(f'{name}.share needs another TextClassifier, got '
                            f'{type(owner).__name__}')
        if owner.bank.text_encoder is None or owner.text_owner is not None:
            raise ValueError(f'{name}.share: the owner must have a text '
                             'encoder of its own (not an embeddings file, '
                             'not a borrowed one)')
        if self.bank.file is not None:
            raise ValueError(f'{name}.share: this classifier reads the '
                             f'embeddings file {self.embeddings_file}; it '
                             'has no encoder')
        if owner.embed_dim != self.embed_dim or \
                owner.freeze_text_encoder != self.freeze_text_encoder:
            raise ValueError(
                f'{name}.share: embed_dim / freeze_text_encoder differ '
                f'({self.embed_dim}, {self.freeze_text_encoder}) vs '
                f'({owner.embed_dim}, {owner.freeze_text_encoder})')
        own = self.bank
        bank = owner.bank.fork()
        for key in ('vocabulary', 'templates', 'use_descriptions', 'prompts'):
            setattr(bank, key, getattr(own, key))
        self._bank = owner.bank if owner.bank.same_prompts(bank) else bank
        # released: the encoder is registered by its owner only; removed,
        # not set to None, so that loading reports the keys of an own copy
        # as unexpected (as for any module this classifier does not have)
        del self.text_encoder
        self.text_encoder = None

    def set_vocabulary(self,
                       vocabulary: VocabularySpec,
                       descriptions: Union[bool, str, dict] = True,
                       templates: Optional[Union[str, Sequence[str]]] = None
                       ) -> None:
        """Swap the class list, e.g. to test on classes never trained on.

        A borrowed bank is not changed: this classifier gets a bank of its
        own over the same encoder, unless the new prompts are the owner's.

        Args:
            vocabulary: See :func:`load_vocabulary`.  With an embeddings file
                the names must be classes of the file (None: all of them).
            descriptions (bool | str | dict): See :func:`load_vocabulary`.
                Defaults to True.
            templates (str | list[str], optional): New templates; None keeps
                the current ones.
        """
        if self._class_proxies is not None:
            # proxies belong to the old class list
            print_log(
                'TextClassifier: new vocabulary, the class proxies set with '
                'set_class_proxies() are dropped.',
                logger='current',
                level=logging.WARNING)
            self._class_proxies = None
        owner = self.text_owner
        if owner is None:
            self._bank.set_vocabulary(vocabulary, descriptions, templates)
            return
        root = owner.bank
        bank = root.fork() if self._bank is root else self._bank
        bank.set_vocabulary(vocabulary, descriptions, templates)
        self._bank = root if root.same_prompts(bank) else bank

    def save_embeddings(self, path: str) -> None:
        """Save the eval-mode class embeddings for ``embeddings=path``
        (written atomically): ``class_names``, ``embeddings`` (C, D),
        ``templates`` and ``meta`` (encoder, weights sha256, descriptions)."""
        self._bank.save_embeddings(path, self._device)

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
                None removes the override.  Checked by
                :func:`~icar_dense.models.text.proxies.unit_proxies`.
        """
        if proxies is None:
            self._class_proxies = None
            return
        rows = (self.num_classes, self.num_classes + 1) \
            if self.bg_embed is not None else (self.num_classes, )
        proxies = unit_proxies(proxies, rows, self.embed_dim,
                               self.vocabulary.source)
        self._class_proxies = proxies.to(self._device)

    # ------------------------------------------------------------------
    # class embeddings and forward
    # ------------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return self.logit_scale.device

    def class_embeddings(self) -> torch.Tensor:
        """Unit-norm class embeddings without the background, (C, D).

        Training mode: one random prompt per class (differentiable when the
        encoder trains).  Eval mode: the prompt ensemble, cached.  While
        proxies are set (:meth:`set_class_proxies`): those proxies.
        """
        if self._class_proxies is not None:
            return self._class_proxies[:self.num_classes].to(self._device)
        return self._bank.class_embeddings(self.training, self._device)

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

    def train(self, mode: bool = True) -> 'TextClassifier':
        super().train(mode)
        if self.text_encoder is not None and self.freeze_text_encoder:
            # no dropout in a frozen encoder: its embeddings are cached
            self.text_encoder.eval()
        if mode and self._bank.encoder_trainable:
            # training will change the weights: eval embeddings are stale
            self._bank.invalidate()
        return self

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

    def score(self, embedded: torch.Tensor) -> torch.Tensor:
        """Logits of unit-norm joint-space features, (..., D) -> (..., C(+1)):
        ``cos / tau`` against :meth:`all_class_embeddings`.  ``forward`` is
        ``score(embed_visual(x))``; a head with its own projection (the
        segmentation auxiliary head) scores its features here.

        ``1 / tau`` scales the ``(C(+1), D)`` weights rather than the
        ``(..., C(+1))`` logits (fewer products; equal to float rounding).
        Without grad (inference) the scaled weights are kept while the
        tensors they come from (class embeddings or proxies, background,
        scale) are the same objects, unmodified: the detector scores every
        image's RoIs against the same vocabulary, and concatenating the
        background and scaling cost a third of the classifier's time.
        """
        dtype = embedded.dtype
        if torch.is_grad_enabled() or type(self).all_class_embeddings \
                is not TextClassifier.all_class_embeddings:
            weights = self.all_class_embeddings() * self.scale()
            return embedded @ weights.to(dtype).t()
        proxies = self._class_proxies
        sources = [proxies if proxies is not None else
                   self.class_embeddings(), self.bg_embed, self.logit_scale]
        # (a parameter moved by .to() keeps its object: data_ptr changes)
        key = [(t, t._version, t.data_ptr()) for t in sources
               if t is not None]
        cache = self.__dict__.get('_score_cache')
        if cache is None or cache[2] != dtype or len(cache[0]) != len(key) \
                or any(a is not b or va != vb
                       for (a, *va), (b, *vb) in zip(cache[0], key)):
            weights = self.all_class_embeddings() * self.scale()
            cache = (key, weights.to(dtype).t(), dtype)
            self.__dict__['_score_cache'] = cache
        return embedded @ cache[1]

    def forward(self, visual_feats: torch.Tensor) -> torch.Tensor:
        """Cosine logits.

        Args:
            visual_feats (torch.Tensor): Shape (..., in_channels), or
                (..., embed_dim) when ``in_channels`` is None.

        Returns:
            torch.Tensor: Logits (..., C), (..., C + 1) with background (last).
        """
        return self.score(self.embed_visual(visual_feats))

    def forward_dense(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits for channel-first maps: (N, C_in, *S) -> (N, C(+1), *S)."""
        x = feats.movedim(1, -1)
        return self(x).movedim(-1, 1)

    def extra_repr(self) -> str:
        encoder = self._bank.text_encoder
        encoder = (type(encoder).__name__ if encoder is not None else
                   f'embeddings={self.embeddings_file}')
        if self.text_owner is not None:
            encoder += ' (shared)'
        proxies = (''
                   if self._class_proxies is None else ', class_proxies=set')
        return (f'classes={self.num_classes}, embed_dim={self.embed_dim}, '
                f'templates={len(self.templates)}, tau={self.tau:.4g}, '
                f'background={self.bg_embed is not None}, {encoder}'
                f'{proxies}')

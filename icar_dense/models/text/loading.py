# Copyright (c) icar_dense contributors. All rights reserved.
"""Loading converted and official iCAR weights into a ``TextClassifier``.

An official iCAR file holds ``model`` with ``sentence_model.*`` (the text
tower) and ``visual_model.projector.weight`` (the visual projection); a
converted one (``tools/convert_icar.py``) holds ``state_dict`` with
``text_classifier.*``.  :class:`TextClassifierLoading` is the part of
``TextClassifier`` that reads both: ``init_cfg=dict(type='Pretrained')``,
:meth:`~TextClassifierLoading.load_checkpoint` and the filter the
segmentor applies to a whole-model checkpoint
(:meth:`~TextClassifierLoading.fit_checkpoint_weights`).
"""
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log

from icar_dense.checkpoint import (ICAR_TEXT, LEGACY_TEXT_KEYS,
                                   load_checkpoint_file, log_rebuilt_unused,
                                   split_icar_state_dict, unwrap_state_dict)

__all__ = ['convert_icar_text_classifier', 'TextClassifierLoading']


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


class TextClassifierLoading:
    """Checkpoint reading of ``TextClassifier`` (a mixin of it).

    Needs ``bank``, ``text_owner``, ``state_dict`` and ``load_state_dict``
    from the classifier.
    """

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
        self.bank.invalidate()

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
        no_tower = self.bank.text_encoder is None
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
        if self.text_owner is not None:
            # the classifier that owns the shared encoder loads them
            shared_keys = sum(
                1 for k in state if k.startswith('text_encoder.'))
            state = {
                k: v
                for k, v in state.items() if not k.startswith('text_encoder.')
            }
        elif self.bank.text_encoder is None:
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

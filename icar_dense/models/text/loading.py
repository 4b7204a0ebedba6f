# Copyright (c) icar_dense contributors. All rights reserved.
"""Loading converted and official iCAR weights into a ``TextClassifier``.

An official iCAR file holds ``model`` with ``sentence_model.*`` (the text
tower) and ``visual_model.projector.weight`` (the visual projection); a
converted one (``tools/convert_icar.py``) holds ``state_dict`` with
``text_classifier.*``.  :class:`TextClassifierLoading` is the part of
``TextClassifier`` that reads both: ``init_cfg=dict(type='Pretrained')``,
:meth:`~TextClassifierLoading.load_checkpoint` and the filter the
segmentor applies to a whole-model checkpoint
(:meth:`~TextClassifierLoading.fit_checkpoint_weights`).  What to take from
either layout is decided in :mod:`icar_dense.checkpoint.text`, the one
place that knows them.
"""
from typing import Dict, List, Optional, Tuple

import torch

from icar_dense.checkpoint import (convert_icar_text_classifier,
                                   fit_text_classifier_state,
                                   load_text_classifier_state,
                                   read_text_classifier_checkpoint)

__all__ = ['convert_icar_text_classifier', 'TextClassifierLoading']


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
        state, layout, rebuilt = read_text_classifier_checkpoint(
            path, prefix, map_location)
        load_text_classifier_state(
            self,
            state,
            path,
            layout,
            rebuilt,
            shares_encoder=self.text_owner is not None,
            has_tower=self.bank.text_encoder is not None)

    def fit_checkpoint_weights(
            self, state: Dict[str, torch.Tensor],
            rebuilt: Optional[List[str]] = None
    ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """The entries of a ``TextClassifier``-keyed state dict (e.g. from
        :func:`convert_icar_text_classifier`) this classifier can load, and
        notes on what was left out (:func:`fit_text_classifier_state`)."""
        return fit_text_classifier_state(state, self.state_dict(),
                                         self.bank.text_encoder is not None,
                                         rebuilt)

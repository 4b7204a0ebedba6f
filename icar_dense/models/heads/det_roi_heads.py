# Copyright (c) icar_dense contributors. All rights reserved.
"""Cascade RoI head whose stages share one text encoder.

Each stage of a Cascade R-CNN has its own box head, and with it its own
``TextClassifier``.  Built from the config as is, every stage would also
build its own RoBERTa: three copies of the same frozen 125M-parameter tower
(~1.5 GB of float32 weights on the GPU and in every checkpoint), each
encoding the same prompts.  ``ICARCascadeRoIHead`` builds the text encoder
once, hands it to the stages whose ``text_encoder`` config is stage 0's, and
lets them borrow stage 0's text bank (:meth:`TextClassifier.share`, the way
any multi-head model shares a text side): their visual projections,
background embeddings and box layers stay per stage, as in the paper's
cascade, and the class embeddings are computed (and cached) once.
mmdet's ``CascadeRoIHead`` builds the stages.
"""
from typing import Optional, Sequence

from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS
from mmengine.logging import print_log

from icar_dense.models.text.bank import build_text_encoder


def _text_encoder_cfg(head_cfg) -> Optional[dict]:
    """The text encoder config of a box head config (None: no encoder)."""
    text = head_cfg.get('text_classifier') if hasattr(head_cfg,
                                                      'get') else None
    if not text or text.get('embeddings') is not None:
        return None
    return text.get('text_encoder')


def _per_stage(cfg, num_stages: int, what: str) -> list:
    cfgs = cfg if isinstance(cfg, list) else [cfg] * num_stages
    if len(cfgs) != num_stages:
        raise ValueError(
            f'ICARCascadeRoIHead: num_stages={num_stages} but '
            f'{len(cfgs)} {what} configs')
    return cfgs


@MODELS.register_module()
class ICARCascadeRoIHead(CascadeRoIHead):
    """mmdet's ``CascadeRoIHead``, the stages sharing one text encoder.

    Args:
        num_stages (int): Number of cascade stages.
        stage_loss_weights (Sequence[float]): Loss weight of each stage.
        bbox_roi_extractor (dict | list[dict]): As in ``CascadeRoIHead``.
        bbox_head (dict | list[dict]): As in ``CascadeRoIHead``.
        share_text_encoder (bool): Stages whose ``text_classifier`` has the
            same ``text_encoder`` config as stage 0's borrow stage 0's
            encoder instead of building their own.  Defaults to True.
        **kwargs: The other arguments of ``CascadeRoIHead``.
    """

    def __init__(self,
                 num_stages: int,
                 stage_loss_weights: Sequence[float],
                 bbox_roi_extractor=None,
                 bbox_head=None,
                 share_text_encoder: bool = True,
                 **kwargs) -> None:
        owner, borrowers = None, []
        if bbox_head is not None:
            _per_stage(bbox_roi_extractor, num_stages, 'bbox_roi_extractor')
            bbox_head = _per_stage(bbox_head, num_stages, 'bbox_head')
            if share_text_encoder:
                bbox_head, owner, borrowers = self._hand_over_encoder(
                    bbox_head)
        super().__init__(
            num_stages,
            stage_loss_weights,
            bbox_roi_extractor=bbox_roi_extractor,
            bbox_head=bbox_head,
            **kwargs)
        self.share_text_encoder = bool(share_text_encoder)
        if borrowers:
            text_owner = self.bbox_head[owner].text_classifier
            for stage in borrowers:
                self.bbox_head[stage].text_classifier.share(text_owner)
            print_log(
                f'{type(self).__name__}: stages {borrowers} use the text '
                f'encoder of stage {owner}',
                logger='current')

    @staticmethod
    def _hand_over_encoder(heads: list):
        """Give the stages with the first stage's text encoder config one
        builder of that encoder: the first stage builds it (at the point of
        the construction, and of the random stream, where it always did),
        the others receive the built module.

        Returns:
            tuple[list, int, list[int]]: The box head configs, the owning
            stage and the stages that are to borrow its bank.
        """
        cfgs = [_text_encoder_cfg(head) for head in heads]
        owner = next((i for i, cfg in enumerate(cfgs) if cfg is not None),
                     None)
        same = [] if owner is None else [
            i for i in range(owner + 1, len(heads)) if cfgs[i] == cfgs[owner]
        ]
        if not same:
            return heads, owner, []
        builder = _BuildOnce(cfgs[owner])
        heads = list(heads)
        for stage in [owner] + same:
            head = dict(heads[stage])
            head['text_classifier'] = dict(
                head['text_classifier'], text_encoder=builder)
            heads[stage] = head
        return heads, owner, same


class _BuildOnce:
    """A text encoder config that builds its module on the first call and
    returns the same module on the next ones."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.module = None

    def __call__(self):
        if self.module is None:
            self.module = build_text_encoder(self.cfg)
        return self.module

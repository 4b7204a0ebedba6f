# Copyright (c) icar_dense contributors. All rights reserved.
"""Cascade RoI head whose stages share one text encoder.

Each stage of a Cascade R-CNN has its own box head, and with it its own
``TextClassifier``.  Built from the config as is, every stage would also
build its own RoBERTa: three copies of the same frozen 125M-parameter tower
(~1.5 GB of float32 weights on the GPU and in every checkpoint), each
encoding the same prompts.  ``ICARCascadeRoIHead`` builds the text encoder
once, in stage 0, and lets the later stages borrow it
(:meth:`TextClassifier.share_text_encoder`): their visual projections,
background embeddings and box layers stay per stage, as in the paper's
cascade, and the class embeddings are computed (and cached) once.
"""
from typing import List, Optional

from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import ModuleList


def _text_encoder_cfg(head_cfg) -> Optional[dict]:
    """The text encoder config of a box head config (None: no encoder)."""
    text = head_cfg.get('text_classifier') if hasattr(head_cfg,
                                                      'get') else None
    if not text or text.get('embeddings') is not None:
        return None
    return text.get('text_encoder')


@MODELS.register_module()
class ICARCascadeRoIHead(CascadeRoIHead):
    """mmdet's ``CascadeRoIHead``, the stages sharing one text encoder.

    Args:
        share_text_encoder (bool): Stages whose ``text_classifier`` has the
            same ``text_encoder`` config as stage 0's borrow stage 0's
            encoder instead of building their own.  Defaults to True.
        **kwargs: The arguments of ``CascadeRoIHead``.
    """

    def __init__(self, *args, share_text_encoder: bool = True, **kwargs):
        # read by init_bbox_head, which CascadeRoIHead.__init__ calls
        object.__setattr__(self, 'share_text_encoder',
                           bool(share_text_encoder))
        super().__init__(*args, **kwargs)

    def init_bbox_head(self, bbox_roi_extractor, bbox_head) -> None:
        self.bbox_roi_extractor = ModuleList()
        self.bbox_head = ModuleList()
        if not isinstance(bbox_roi_extractor, list):
            bbox_roi_extractor = [bbox_roi_extractor] * self.num_stages
        if not isinstance(bbox_head, list):
            bbox_head = [bbox_head] * self.num_stages
        if not len(bbox_roi_extractor) == len(bbox_head) == self.num_stages:
            raise ValueError(
                f'{type(self).__name__}: num_stages={self.num_stages} but '
                f'{len(bbox_roi_extractor)} bbox_roi_extractor and '
                f'{len(bbox_head)} bbox_head configs')
        owner = None
        owner_cfg = None
        shared: List[int] = []
        for stage, (extractor, head) in enumerate(
                zip(bbox_roi_extractor, bbox_head)):
            self.bbox_roi_extractor.append(MODELS.build(extractor))
            encoder_cfg = _text_encoder_cfg(head)
            borrow = (
                self.share_text_encoder and owner is not None
                and encoder_cfg is not None and encoder_cfg == owner_cfg)
            if borrow:
                # hand the built encoder over instead of building a copy
                head = dict(head)
                text = dict(head['text_classifier'])
                text['text_encoder'] = owner.text_encoder
                head['text_classifier'] = text
            module = MODELS.build(head)
            classifier = getattr(module, 'text_classifier', None)
            if borrow:
                classifier.share_text_encoder(owner)
                shared.append(stage)
            elif (owner is None and encoder_cfg is not None
                  and getattr(classifier, 'text_encoder', None) is not None):
                owner, owner_cfg = classifier, encoder_cfg
            self.bbox_head.append(module)
        if shared:
            print_log(
                f'{type(self).__name__}: stages {shared} use the text '
                'encoder of stage 0',
                logger='current')

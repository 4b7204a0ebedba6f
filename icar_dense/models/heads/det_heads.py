"""Open-vocabulary box head: mmdet's 4conv1fc head with iCAR's text classifier.

The classifier of :class:`OVShared4Conv1FCBBoxHead` is the shared
``TextClassifier``: the 1024-d RoI feature is projected to the joint space
and compared (cosine / tau) with class embeddings produced by the text
encoder from the class names (and descriptions).  Box regression is class
agnostic, so nothing in the head depends on the number of classes except
the vocabulary, which can be swapped after training
(:meth:`OVShared4Conv1FCBBoxHead.set_vocabulary`).

Losses (``loss_cls``):

* softmax cross-entropy (mmdet's ``CrossEntropyLoss``): the text classifier
  needs ``background=True`` -- a learned background embedding is the last
  class, like mmdet's background index ``num_classes``;
* sigmoid or federated sigmoid cross-entropy
  (:class:`~icar_dense.models.heads.det_losses.SigmoidFederatedLoss`): no
  background embedding (``background=False``).

``train_classes`` restricts training to the base classes of an
open-vocabulary split: the logits of the other classes are excluded from
the classification loss (and from the federated loss's negative sampling),
so the detector learns nothing about them and is tested on all classes.

Prediction (``topk_nms=True``): the per-class NMS runs on the highest
scores only (:func:`~icar_dense.models.heads.large_vocab.topk_multiclass_nms`),
with the detections of mmdet's ``multiclass_nms``; mmdet's version expands
the class-agnostic boxes to ``N x C x 4`` and runs one NMS per class, which
at 21,841 classes takes ~25 s per 512 x 512 image on a 2-core CPU (the rest
of the detector: ~4 s).
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import Shared4Conv1FCBBoxHead
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor

from .large_vocab import topk_multiclass_nms

# Added to the logits of classes that are not trained: exp() of it is 0 in
# every float type, so they drop out of softmax and sigmoid losses alike.
_EXCLUDED_LOGIT = -1e4


def _is_fc_cls_init(cfg: dict) -> bool:
    override = cfg.get('override') if isinstance(cfg, dict) else None
    return isinstance(override, dict) and override.get('name') == 'fc_cls'


@MODELS.register_module()
class OVShared4Conv1FCBBoxHead(Shared4Conv1FCBBoxHead):
    """``Shared4Conv1FCBBoxHead`` whose ``fc_cls`` is a ``TextClassifier``.

    Args:
        text_classifier (dict): Config of the ``TextClassifier``;
            ``in_channels`` defaults to ``fc_out_channels``.  Its vocabulary
            size must equal ``num_classes``.
        num_classes (int): Number of classes (the vocabulary size).
        train_classes (Sequence[str] | dict, optional): The classes trained
            on (the base classes): a list of names of the vocabulary, or
            ``dict(ann_file=LVIS_JSON, frequencies=('f', 'c'))`` to take the
            LVIS categories of those frequencies.  None trains on all.
        reg_class_agnostic (bool): Must be True (one box per RoI, whatever
            the vocabulary). Defaults to True.
        topk_nms (bool): Run the test-time NMS on the top-scoring
            candidates only (same detections as mmdet's
            ``multiclass_nms``, much faster for large vocabularies).
            Defaults to True.
        **kwargs: The arguments of ``Shared4Conv1FCBBoxHead``.
    """

    def __init__(self,
                 text_classifier: dict,
                 num_classes: int,
                 train_classes: Optional[Union[Sequence[str], dict]] = None,
                 reg_class_agnostic: bool = True,
                 topk_nms: bool = True,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **kwargs) -> None:
        name = type(self).__name__
        if not reg_class_agnostic:
            raise ValueError(f'{name}: box regression must be class agnostic '
                             '(reg_class_agnostic=True): the vocabulary, and '
                             'with it the number of classes, can change '
                             'after training')
        super().__init__(
            num_classes=num_classes,
            reg_class_agnostic=True,
            init_cfg=init_cfg,
            **kwargs)
        if getattr(self.loss_cls, 'use_sigmoid', False) and \
                not self.custom_cls_channels:
            # mmdet's BBoxHead would train sigmoids but score with softmax
            raise ValueError(
                f'{name}: {type(self.loss_cls).__name__}(use_sigmoid=True) is '
                'not supported by the box head; for sigmoid cross-entropy use '
                "loss_cls=dict(type='SigmoidFederatedLoss', federated=False)")
        # the text classifier replaces the linear classifier (the fc_cls
        # property below serves it to mmdet's forward)
        cls_channels = self._modules.pop('fc_cls').out_features
        if init_cfg is None:
            self.init_cfg = [
                c for c in self.init_cfg if not _is_fc_cls_init(c)
            ]
        text_classifier = dict(text_classifier)
        text_classifier.setdefault('in_channels', self.cls_last_dim)
        if text_classifier['in_channels'] != self.cls_last_dim:
            raise ValueError(
                f'{name}: text_classifier.in_channels='
                f'{text_classifier["in_channels"]} but the classification '
                f'feature has {self.cls_last_dim} channels')
        self.text_classifier = MODELS.build(text_classifier)
        self._check_vocabulary_size()
        with_bg = self.text_classifier.bg_embed is not None
        wanted_bg = cls_channels == num_classes + 1
        if with_bg != wanted_bg:
            loss = type(self.loss_cls).__name__
            raise ValueError(
                f'{name}: {loss} expects {cls_channels} outputs for '
                f'{num_classes} classes, so set text_classifier.background='
                f'{wanted_bg} (softmax needs the background class, sigmoid '
                'losses do not)')
        self.train_classes = train_classes
        self.topk_nms = topk_nms
        self._train_names: Optional[List[str]] = None
        self._train_mask = None  # (vocabulary names, bool mask)

    # ------------------------------------------------------------------
    # vocabulary
    # ------------------------------------------------------------------
    def _check_vocabulary_size(self) -> None:
        vocab = self.text_classifier.num_classes
        if vocab != self.num_classes:
            raise ValueError(
                f'{type(self).__name__}: num_classes={self.num_classes} but '
                f'the text classifier vocabulary has {vocab} classes '
                f'({self.text_classifier.vocabulary.source}); they must be '
                'equal (set both, e.g. with tools/test.py --vocabulary)')

    @property
    def class_names(self) -> List[str]:
        return self.text_classifier.class_names

    def set_vocabulary(self, vocabulary, descriptions=True) -> None:
        """Use another class list (names, file or dataset name)."""
        self.text_classifier.set_vocabulary(
            vocabulary, descriptions=descriptions)
        self.num_classes = self.text_classifier.num_classes
        self._train_mask = None

    def _resolve_train_names(self) -> Optional[List[str]]:
        spec = self.train_classes
        if spec is None:
            return None
        if self._train_names is None:
            if isinstance(spec, dict):
                from icar_dense.datasets.det_ov import lvis_split_names
                unknown = set(spec) - {'ann_file', 'frequencies'}
                if unknown or 'ann_file' not in spec:
                    raise KeyError(
                        f'{type(self).__name__}: train_classes dict takes '
                        f'ann_file and frequencies, got {sorted(spec)}')
                self._train_names, _ = lvis_split_names(
                    spec['ann_file'], spec.get('frequencies', ('f', 'c')))
            elif isinstance(spec, str):
                raise TypeError(f'{type(self).__name__}: train_classes must '
                                'be a list of class names or a dict, got '
                                f'the string {spec!r}')
            else:
                self._train_names = list(spec)
        return self._train_names

    def train_class_mask(self, device=None) -> Optional[Tensor]:
        """Bool mask over the vocabulary of the classes trained on."""
        names = self._resolve_train_names()
        if names is None:
            return None
        vocab = tuple(self.class_names)
        if self._train_mask is None or self._train_mask[0] != vocab:
            index = {n: i for i, n in enumerate(vocab)}
            missing = [n for n in names if n not in index]
            if missing:
                raise ValueError(
                    f'{type(self).__name__}: train_classes {missing[:10]} '
                    f'({len(missing)} in all) are not in the vocabulary '
                    f'({self.text_classifier.vocabulary.source})')
            mask = torch.zeros(len(vocab), dtype=torch.bool)
            mask[[index[n] for n in names]] = True
            self._train_mask = (vocab, mask)
        mask = self._train_mask[1]
        return mask if device is None else mask.to(device)

    # ------------------------------------------------------------------
    # forward / loss
    # ------------------------------------------------------------------
    @property
    def fc_cls(self) -> nn.Module:
        """What mmdet's ``ConvFCBBoxHead.forward`` calls for the class
        scores: the text classifier."""
        return self.text_classifier

    def forward(self, x: Tensor) -> tuple:
        """``ConvFCBBoxHead.forward``, the text classifier as ``fc_cls``."""
        self._check_vocabulary_size()
        return super().forward(x)

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor,
             labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
             bbox_weights: Tensor, **kwargs) -> dict:
        """mmdet's loss, restricted to ``train_classes``."""
        mask = self.train_class_mask(
            cls_score.device) if cls_score is not None else None
        if mask is not None:
            if hasattr(self.loss_cls, 'set_allowed_classes'):
                self.loss_cls.set_allowed_classes(mask)
            # the background column (softmax) is always trained
            keep = torch.cat([mask, mask.new_ones(cls_score.size(1) -
                                                  mask.numel())])
            cls_score = cls_score.masked_fill(~keep, _EXCLUDED_LOGIT)
        return super().loss(cls_score, bbox_pred, rois, labels, label_weights,
                            bbox_targets, bbox_weights, **kwargs)

    # ------------------------------------------------------------------
    # prediction
    # ------------------------------------------------------------------
    def _predict_by_feat_single(self,
                                roi: Tensor,
                                cls_score: Tensor,
                                bbox_pred: Tensor,
                                img_meta: dict,
                                rescale: bool = False,
                                rcnn_test_cfg=None) -> InstanceData:
        """mmdet's version, with :func:`topk_multiclass_nms` as the NMS."""
        if not self.topk_nms or rcnn_test_cfg is None or roi.shape[0] == 0:
            return super()._predict_by_feat_single(roi, cls_score, bbox_pred,
                                                   img_meta, rescale,
                                                   rcnn_test_cfg)
        # without a test cfg mmdet returns the decoded boxes and all scores
        raw = super()._predict_by_feat_single(roi, cls_score, bbox_pred,
                                              img_meta, rescale, None)
        dets, labels = topk_multiclass_nms(
            raw.bboxes,
            raw.scores,
            rcnn_test_cfg.score_thr,
            rcnn_test_cfg.nms,
            rcnn_test_cfg.max_per_img,
            box_dim=raw.bboxes.size(-1))
        results = InstanceData()
        results.bboxes = dets[:, :-1]
        results.scores = dets[:, -1]
        results.labels = labels
        return results

"""Seen / unseen / harmonic mIoU of the open-vocabulary segmentation split."""
import copy
from collections import OrderedDict
from typing import Dict, Sequence

import numpy as np
import torch
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

from icar_dense.datasets.seg_ov_ade import resolve_class_names


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b); 0 when both are 0; NaN when either is NaN."""
    if np.isnan(a) or np.isnan(b):
        return float('nan')
    return 0.0 if a + b == 0 else float(2 * a * b / (a + b))


@METRICS.register_module()
class SeenUnseenIoUMetric(IoUMetric):
    """``IoUMetric`` plus the open-vocabulary summary.

    Besides mmseg's ``aAcc`` / ``mIoU`` / ``mAcc`` (over all classes) it
    reports ``mIoU_seen`` and ``mIoU_unseen`` (mean IoU over the classes of
    each group, NaN classes -- absent from both prediction and ground truth --
    skipped like mmseg does) and ``hIoU``, their harmonic mean.  All numbers
    are percentages rounded to two decimals, like mmseg's.

    Args:
        unseen_classes (Sequence[str]): Names of the unseen classes, as in the
            test dataset's ``metainfo.classes``; every other class is seen.
        **kwargs: The arguments of ``IoUMetric``.
    """

    def __init__(self, unseen_classes: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(unseen_classes, str) or not len(unseen_classes):
            raise ValueError(
                f'{type(self).__name__}: unseen_classes must be a non-empty '
                f'list of class names, got {unseen_classes!r}')
        self.unseen_classes = list(unseen_classes)

    @property
    def dataset_meta(self):
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta) -> None:
        # checked when the runner hands over the dataset's classes, so a
        # misspelt unseen class fails before inference, not after it
        if meta is not None and meta.get('classes') is not None:
            resolve_class_names(self.unseen_classes, meta['classes'],
                                type(self).__name__)
        self._dataset_meta = copy.deepcopy(meta)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only:
            return metrics
        classes = self.dataset_meta['classes']
        unseen = resolve_class_names(self.unseen_classes, classes,
                                     type(self).__name__)
        unseen_set = set(unseen)
        seen = [i for i in range(len(classes)) if i not in unseen_set]
        if not seen:
            raise ValueError(f'{type(self).__name__}: every one of the '
                             f'{len(classes)} classes is unseen')
        iou = self.class_iou(results)
        if self.nan_to_num is not None:
            # as IoUMetric does for its per-class numbers
            iou = np.nan_to_num(iou, nan=self.nan_to_num)
        groups = OrderedDict(
            mIoU_seen=float(np.nanmean(iou[seen])) if not np.isnan(
                iou[seen]).all() else float('nan'),
            mIoU_unseen=float(np.nanmean(iou[unseen])) if not np.isnan(
                iou[unseen]).all() else float('nan'))
        groups['hIoU'] = harmonic_mean(groups['mIoU_seen'],
                                       groups['mIoU_unseen'])
        for key, value in groups.items():
            metrics[key] = float(np.round(value * 100, 2))
        print_log(
            f'open-vocabulary split: {len(seen)} seen / {len(unseen)} unseen '
            f'classes: mIoU_seen {metrics["mIoU_seen"]}, mIoU_unseen '
            f'{metrics["mIoU_unseen"]}, hIoU {metrics["hIoU"]}',
            logger=MMLogger.get_current_instance())
        return metrics

    @staticmethod
    def class_iou(results: list) -> np.ndarray:
        """Per-class IoU (fraction, NaN where the union is empty) from the
        ``(intersect, union, pred_area, label_area)`` tuples of ``process``."""
        intersect = sum(r[0] for r in results)
        union = sum(r[1] for r in results)
        if isinstance(intersect, torch.Tensor):
            intersect, union = intersect.double(), union.double()
            iou = (intersect / union).cpu().numpy()
        else:
            iou = np.asarray(intersect, dtype=np.float64) / np.asarray(
                union, dtype=np.float64)
        return iou

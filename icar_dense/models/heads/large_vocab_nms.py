# Copyright (c) icar_dense contributors. All rights reserved.
"""Per-class NMS of a large vocabulary on the top-scoring candidates only.

mmdet's ``multiclass_nms`` expands the class-agnostic boxes to ``N x C x 4``
and, beyond 10,000 survivors of the score threshold, runs one NMS per class;
:func:`topk_multiclass_nms` returns the same detections from the ``K``
highest scores (see :mod:`.large_vocab` for why they are the same).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['topk_multiclass_nms']

_NMS_KEYS = {'type', 'iou_threshold', 'class_agnostic', 'split_thr'}


def _topk_nms_applies(nms_cfg, max_num: int, box_dim: int,
                      multi_bboxes: Tensor) -> bool:
    if nms_cfg is None or max_num is None or max_num <= 0:
        return False
    cfg = dict(nms_cfg)
    if cfg.get('type', 'nms') != 'nms' or set(cfg) - _NMS_KEYS:
        # soft-NMS rescores boxes: the top-K argument does not hold
        return False
    return multi_bboxes.dim() == 2 and multi_bboxes.shape[1] == box_dim


def _pairwise_suppression(boxes: Tensor, pi: Tensor, pj: Tensor,
                          iou_threshold: float) -> Tensor:
    """Whether box ``pj`` would suppress box ``pi`` (IoU with offset 0, as
    mmcv's ``nms`` computes it)."""
    from mmdet.structures.bbox import bbox_overlaps
    return bbox_overlaps(
        boxes[pi], boxes[pj], is_aligned=True) > iou_threshold


def _per_class_nms(boxes: Tensor,
                   scores: Tensor,
                   labels: Tensor,
                   iou_threshold: float,
                   class_agnostic: bool,
                   loop_min_group: int = 64) -> Tuple[Tensor, Tensor]:
    """Greedy hard NMS per class on the original coordinates.

    mmcv's ``batched_nms`` separates the classes by adding ``label x
    (max coordinate + 1)`` to the boxes, which in float32 rounds the
    coordinates once labels reach the thousands (ulp 1 px at ~1e7).  Here
    classes with at least ``loop_min_group`` boxes get one mmcv ``nms``
    call each; the (many) smaller groups are done together: the
    suppression pairs within each group (higher score suppresses lower when
    IoU > threshold, mmcv's formula) and the greedy rule "kept unless a kept
    higher-scoring box suppresses it", iterated to its fixed point (exact:
    after ``r`` rounds the ``r`` best of every group are final).  Returns
    ``(dets, keep)`` sorted by decreasing score like ``batched_nms``.
    """
    from mmcv.ops import nms
    if class_agnostic:
        return nms(boxes, scores, iou_threshold)
    num = scores.numel()
    device = scores.device
    # by class, then by decreasing score
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    keep_mask = torch.ones(num, dtype=torch.bool, device=device)
    big = counts >= loop_min_group
    for start, count in zip(starts[big].tolist(), counts[big].tolist()):
        idx = order[start:start + count]
        _, kept = nms(boxes[idx], scores[idx], iou_threshold)
        drop = torch.ones(count, dtype=torch.bool, device=device)
        drop[kept] = False
        keep_mask[idx[drop]] = False
    small = (counts > 1) & ~big
    if bool(small.any()):
        # position p (in `order`) of a small group: pairs (p, q), q < p
        group = torch.repeat_interleave(
            torch.arange(counts.numel(), device=device), counts)
        rank = torch.arange(num, device=device) - starts[group]
        rank = torch.where(small[group], rank, torch.zeros_like(rank))
        pi = torch.repeat_interleave(torch.arange(num, device=device), rank)
        first = torch.cumsum(rank, 0) - rank
        pj = starts[group[pi]] + torch.arange(
            pi.numel(), device=device) - first[pi]
        hit = _pairwise_suppression(boxes[order], pi, pj, iou_threshold)
        pi, pj = pi[hit], pj[hit]
        if pi.numel():
            kept = torch.ones(num, dtype=torch.bool, device=device)
            while True:
                votes = torch.zeros(num, device=device).index_add_(
                    0, pi, kept[pj].float())
                new = votes == 0
                if torch.equal(new, kept):
                    break
                kept = new
            keep_mask[order[~kept]] = False
    keep = keep_mask.nonzero(as_tuple=False).view(-1)
    kept_scores, perm = scores[keep].sort(descending=True, stable=True)
    keep = keep[perm]
    return torch.cat([boxes[keep], kept_scores[:, None]], -1), keep


def topk_multiclass_nms(multi_bboxes: Tensor,
                        multi_scores: Tensor,
                        score_thr: float,
                        nms_cfg: dict,
                        max_num: int = -1,
                        box_dim: int = 4,
                        init_k: Optional[int] = None,
                        stats: Optional[dict] = None) -> Tuple[Tensor, Tensor]:
    """mmdet's ``multiclass_nms`` for class-agnostic boxes, from the top-K.

    Same arguments and results as
    :func:`mmdet.models.layers.multiclass_nms` (``score_factors`` and
    ``return_inds`` aside); falls back to it for class-specific boxes, soft
    NMS, ``max_num <= 0`` or unknown NMS options.

    Args:
        multi_bboxes (Tensor): ``(N, box_dim)`` class-agnostic boxes.
        multi_scores (Tensor): ``(N, C + 1)`` scores, background last.
        score_thr (float): Boxes scoring at most this are dropped.
        nms_cfg (dict): ``dict(type='nms', iou_threshold=...)``.
        max_num (int): Detections kept.
        box_dim (int): 4 for boxes.
        init_k (int, optional): First number of candidates; defaults to
            ``max(2000, 4 * max_num)``.
        stats (dict, optional): Filled with ``k`` (candidates used),
            ``rounds`` and ``valid`` (scores above the threshold).

    Returns:
        tuple[Tensor, Tensor]: ``dets`` ``(n, box_dim + 1)`` (score last)
        and ``labels`` ``(n, )``, sorted by decreasing score.
    """
    if not _topk_nms_applies(nms_cfg, max_num, box_dim, multi_bboxes):
        from mmdet.models.layers import multiclass_nms
        return multiclass_nms(multi_bboxes, multi_scores, score_thr, nms_cfg,
                              max_num, box_dim=box_dim)
    cfg = dict(nms_cfg)
    iou_threshold = float(cfg['iou_threshold'])
    class_agnostic = bool(cfg.get('class_agnostic', False))
    scores = multi_scores[:, :-1]
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    valid = int((flat > score_thr).sum())
    k = init_k if init_k is not None else max(2000, 4 * max_num)
    rounds = 0
    while True:
        rounds += 1
        if k >= valid:
            inds = (flat > score_thr).nonzero(as_tuple=False).view(-1)
            cand_scores = flat[inds]
        else:
            # every one of the k best is above the threshold (k < valid)
            cand_scores, inds = flat.topk(k)
        boxes = multi_bboxes[inds // num_classes]
        labels = inds % num_classes
        if inds.numel() == 0:
            dets = multi_bboxes.new_zeros((0, box_dim + 1))
            break
        dets, keep = _per_class_nms(boxes, cand_scores, labels,
                                    iou_threshold, class_agnostic)
        labels = labels[keep]
        if keep.numel() >= max_num or k >= valid:
            break
        k *= 4
    if stats is not None:
        stats.update(k=min(k, valid), rounds=rounds, valid=valid)
    labels = labels if inds.numel() else inds.new_zeros((0, ))
    return dets[:max_num], labels[:max_num]

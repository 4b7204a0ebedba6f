# Copyright (c) icar_dense contributors. All rights reserved.
"""LVIS AP with lvis-api 0.5.3's numbers, from arrays (numpy).

:func:`evaluate_lvis` selects the detections lvis-api evaluates, computes
their IoUs and matches (``lvis_match``), accumulates precision / recall per
category and area range and summarises them.  What lvis-api 0.5.3 does, as
mmdet's ``LVISMetric`` calls it, and this module reproduces
(``tests/det/test_lvis_metric.py`` compares the two):

* at most 300 detections per image, the best by score (``LVISResults``);
* a detection's area is its box's ``w * h``, for masks too (mmdet's segm
  results carry the box, and lvis-api then takes the area from it); ground
  truth uses the file's ``area``;
* annotations and detections whose area is not in ``(0, inf)`` are dropped
  (``LVIS.get_ann_ids`` with category ids);
* a detection counts only where its category is in the image's
  ``neg_category_ids`` or annotated in it; an unmatched detection of a
  category in ``not_exhaustive_category_ids`` is ignored;
* every image of the annotation file is evaluated (mmdet sets
  ``params.imgIds``, which lvis-api does not read), ``iscrowd`` is not used;
* greedy matching per IoU threshold (best unmatched regular ground truth,
  else best ignored one), precision interpolated at 101 recall points,
  categories grouped by their ``frequency`` (r / c / f).
"""
import math
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np

from .lvis_data import (AREA_LABELS, AREA_RANGES, IOU_THRS, MAX_DETS,
                        REC_THRS, LVISDetections, LVISGroundTruth, _member,
                        _segments)
from .lvis_match import group_ious, match_candidates

__all__ = ['evaluate_lvis', 'match_lvis', 'accumulate_lvis', 'MATCHED_KEYS']


def _prepare(gt: LVISGroundTruth, dets: LVISDetections,
             scores: np.ndarray, max_dets: int) -> dict:
    """The detections lvis-api evaluates, grouped by (image, category)."""
    num_cats = gt.num_cats
    # 1. LVISResults: the max_dets best of each image (stable: ties keep
    #    the predicted order)
    order = np.lexsort((dets.local, -scores, dets.img))
    starts, lengths = _segments(dets.img[order])
    rank = np.arange(dets.num) - np.repeat(starts, lengths)
    kept = order[rank < max_dets] if max_dets >= 0 else order
    # 2. boxes as mmdet writes them (xywh from float32 corners, float64),
    #    area w * h; get_ann_ids keeps 0 < area < inf
    b = dets.boxes[kept].astype(np.float64)
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
                    1)
    del b
    area = xywh[:, 2] * xywh[:, 3]
    ok = (area > 0) & (area < math.inf)
    # 3. federated: categories annotated in or absent from the image
    key = dets.img[kept].astype(np.int64) * num_cats + dets.cats[kept]
    ok &= _member(key, gt.pos_keys) | _member(key, gt.neg_keys)
    kept, xywh, area, key = kept[ok], xywh[ok], area[ok], key[ok]
    score = scores[kept]
    local = dets.local[kept]
    # by group (image, category), then lvis-api's order in the group
    order = np.lexsort((local, -score, key))
    kept, xywh, area, key = kept[order], xywh[order], area[order], key[order]
    score, local = score[order], local[order]
    gstart, gcount = _segments(key)
    gkeys = key[gstart] if len(key) else np.zeros(0, np.int64)
    gpos = np.searchsorted(gt.pos_keys, gkeys)
    has_gt = gpos < len(gt.pos_keys)
    has_gt[has_gt] &= gt.pos_keys[gpos[has_gt]] == gkeys[has_gt]
    gpos = np.minimum(gpos, max(len(gt.pos_keys) - 1, 0))
    if len(gt.pos_keys):
        gt_start = np.where(has_gt, gt.group_start[gpos], 0)
        gt_count = np.where(has_gt, gt.group_count[gpos], 0)
    else:
        gt_start = gt_count = np.zeros(len(gkeys), np.int64)
    return dict(kept=kept, xywh=xywh, area=area, key=key, score=score,
                local=local, in_nel=_member(key, gt.nel_keys),
                det_group=np.repeat(np.arange(len(gstart)), gcount),
                has_gt=has_gt, gt_start=gt_start, gt_count=gt_count)


def evaluate_lvis(gt: LVISGroundTruth,
                  dets: LVISDetections,
                  iou_type: str = 'bbox',
                  max_dets: int = MAX_DETS,
                  timings: Optional[dict] = None,
                  cache: Optional[dict] = None) -> dict:
    """LVIS AP of ``dets`` (lvis-api 0.5.3's numbers, see module doc):
    :func:`match_lvis`, then :func:`accumulate_lvis`.

    Args:
        cache (dict, optional): Shared by the calls for box and mask AP of
            the same detections: the selection of the evaluated detections
            is made once when both use the same scores.

    Returns:
        dict: ``results`` (AP, AP50, ..., APr, APc, APf, AR@300, ...),
        ``precision`` ``(T, R, K, A)`` and ``recall`` ``(T, K, A)`` as in
        ``LVISEval.eval``.
    """
    matched = match_lvis(gt, dets, iou_type, max_dets, timings, cache)
    return accumulate_lvis(gt, [matched], timings)


# what accumulate_lvis needs of each evaluated detection
MATCHED_KEYS = ('key', 'area', 'score', 'local', 'in_nel', 'code')


def match_lvis(gt: LVISGroundTruth,
               dets: LVISDetections,
               iou_type: str = 'bbox',
               max_dets: int = MAX_DETS,
               timings: Optional[dict] = None,
               cache: Optional[dict] = None) -> dict:
    """The per-image part of LVIS evaluation: which detections count, their
    IoUs and lvis-api's matching.

    Each image's work depends only on its own detections and annotations,
    so the images can be matched in separate processes (a rank's share of
    the test set) and only the result travels.

    Returns:
        dict: for each evaluated detection (:data:`MATCHED_KEYS`): ``key``
        (image position x categories + category), ``area``, ``score``,
        ``local`` (its index among the image's predictions), ``in_nel``
        (its category is not exhaustively annotated in the image) and
        ``code`` ``(n, A, T)`` int8 match codes; plus ``num_candidates``.
    """
    if iou_type not in ('bbox', 'segm'):
        raise ValueError(f'iou_type {iou_type!r}: bbox or segm')
    if iou_type == 'segm' and gt.rles is None:
        raise ValueError('the ground truth was loaded without masks')
    t0 = time.perf_counter()
    raw = dets.mask_scores if iou_type == 'segm' else dets.scores
    cache_key = (id(raw), max_dets)
    if cache is not None and cache_key in cache:
        prep = cache[cache_key]
    else:
        prep = _prepare(gt, dets, raw.astype(np.float64), max_dets)
        if cache is not None:
            cache[cache_key] = prep
    t1 = time.perf_counter()
    # 4. IoUs of each detection with its group's ground truths
    rows_gt, row_first, ious = group_ious(gt, dets, prep, iou_type)
    t2 = time.perf_counter()
    # 5. matching, per area range and IoU threshold
    code, num_candidates = match_candidates(ious, rows_gt, row_first, prep,
                                            gt, _gt_ignore(gt))
    del ious
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(
            prepare_s=round(t1 - t0, 3),
            iou_s=round(t2 - t1, 3),
            match_s=round(t3 - t2, 3),
            detections_evaluated=int(len(prep['kept'])),
            candidate_detections=num_candidates)
    out = {k: prep[k] for k in MATCHED_KEYS if k != 'code'}
    out.update(code=code, num_candidates=num_candidates)
    return out


def accumulate_lvis(gt: LVISGroundTruth, matched: List[dict],
                    timings: Optional[dict] = None) -> dict:
    """Precision / recall per category and area range, and lvis-api's
    summary, from the :func:`match_lvis` results of disjoint sets of images
    (in any order: the detections are sorted here)."""
    t0 = time.perf_counter()
    if len(matched) == 1:
        parts = matched[0]
    else:
        parts = {k: np.concatenate([m[k] for m in matched])
                 for k in MATCHED_KEYS}
    precision, recall = _accumulate(gt, parts, parts['code'],
                                    _gt_ignore(gt))
    results = _summarize(precision, recall, gt.freq_groups)
    if timings is not None:
        timings['accumulate_s'] = round(time.perf_counter() - t0, 3)
    return dict(results=results, precision=precision, recall=recall)


def _gt_ignore(gt: LVISGroundTruth) -> np.ndarray:
    """``(G, A)``: each annotation ignored in each area range."""
    return np.stack([
        gt.ignore | (gt.area < lo) | (gt.area > hi) for lo, hi in AREA_RANGES
    ], 1)


def _accumulate(gt: LVISGroundTruth, prep: dict, code: np.ndarray,
                gt_ignore: np.ndarray):
    """``LVISEval.accumulate``: ``precision`` ``(T, R, K, A)`` and
    ``recall`` ``(T, K, A)`` from the match codes of the evaluated
    detections (``prep``: their :data:`MATCHED_KEYS`)."""
    key, area, score = prep['key'], prep['area'], prep['score']
    num_cats, num_areas = gt.num_cats, len(AREA_RANGES)
    num_thrs, num_rec = len(IOU_THRS), len(REC_THRS)
    precision = -np.ones((num_thrs, num_rec, num_cats, num_areas))
    recall = -np.ones((num_thrs, num_cats, num_areas))
    num_gt = np.zeros((num_cats, num_areas), np.int64)
    for a in range(num_areas):
        num_gt[:, a] = np.bincount(
            gt.cat[~gt_ignore[:, a]], minlength=num_cats)[:num_cats]
    det_cat = (key % num_cats).astype(np.int64)
    det_img = (key // num_cats).astype(np.int64)
    order = np.lexsort((prep['local'], det_img, -score, det_cat))
    bounds = np.searchsorted(det_cat[order], np.arange(num_cats + 1))
    out_of_range = np.stack(
        [(area < lo) | (area > hi) for lo, hi in AREA_RANGES], 1)
    out_of_range |= prep['in_nel'][:, None]
    eps = np.spacing(1)
    for k in np.flatnonzero(num_gt.any(1)).tolist():
        idx = order[bounds[k]:bounds[k + 1]]
        n = len(idx)
        for a in np.flatnonzero(num_gt[k]).tolist():
            if n == 0:
                recall[:, k, a] = 0
                precision[:, :, k, a] = 0.0
                continue
            c = code[idx, a, :].T  # (T, n)
            tp_sum = np.cumsum(c == 1, axis=1).astype(np.float64)
            fp_sum = np.cumsum((c == 0) & ~out_of_range[idx, a][None, :],
                               axis=1).astype(np.float64)
            rc = tp_sum / num_gt[k, a]
            recall[:, k, a] = rc[:, -1]
            pr = tp_sum / (fp_sum + tp_sum + eps)
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(num_thrs):
                ins = np.searchsorted(rc[t], REC_THRS, side='left')
                q = np.zeros(num_rec)
                inside = ins < n
                q[inside] = pr[t, ins[inside]]
                precision[t, :, k, a] = q
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray,
               freq_groups: List[List[int]]) -> Dict[str, float]:
    """``LVISEval.summarize`` (same selections and means)."""

    def get(kind, iou_thr=None, area='all', freq=None):
        aidx = [AREA_LABELS.index(area)]
        if kind == 'ap':
            s = precision
            if iou_thr is not None:
                s = s[np.where(iou_thr == IOU_THRS)[0]]
            if freq is not None:
                s = s[:, :, freq_groups[freq], aidx]
            else:
                s = s[:, :, :, aidx]
        else:
            s = recall
            if iou_thr is not None:
                s = s[np.where(iou_thr == IOU_THRS)[0]]
            s = s[:, :, aidx]
        valid = s[s > -1]
        return -1.0 if len(valid) == 0 else float(np.mean(valid))

    out = OrderedDict()
    out['AP'] = get('ap')
    out['AP50'] = get('ap', iou_thr=0.50)
    out['AP75'] = get('ap', iou_thr=0.75)
    out['APs'] = get('ap', area='small')
    out['APm'] = get('ap', area='medium')
    out['APl'] = get('ap', area='large')
    out['APr'] = get('ap', freq=0)
    out['APc'] = get('ap', freq=1)
    out['APf'] = get('ap', freq=2)
    out[f'AR@{MAX_DETS}'] = get('ar')
    for area in ('small', 'medium', 'large'):
        out[f'AR{area[0]}@{MAX_DETS}'] = get('ar', area=area)
    return out

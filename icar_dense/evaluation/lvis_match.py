# Copyright (c) icar_dense contributors. All rights reserved.
"""IoUs of the (detection, ground truth) pairs LVIS compares, and lvis-api's
greedy matching for all (image, category) groups at once.
"""
from typing import Tuple

import numpy as np
import pycocotools.mask as mask_utils

from .lvis_data import IOU_THRS, LVISDetections, LVISGroundTruth, _segments

__all__ = ['group_ious', 'match_candidates']


def group_ious(gt: LVISGroundTruth, dets: LVISDetections, prep: dict,
               iou_type: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoUs of each evaluated detection with its group's ground truths.

    Args:
        prep (dict): the evaluated detections (``lvis_eval._prepare``).

    Returns:
        tuple: ``rows_gt`` (the detections of groups with ground truth, as
        rows of ``prep``), ``row_first`` (``(len(rows_gt) + 1, )``: where
        each one's IoUs start in ``ious``) and the flat ``ious`` (float64,
        lvis-api's ground-truth order per detection).
    """
    det_group = prep['det_group']
    rows_gt = np.flatnonzero(prep['has_gt'][det_group])
    d_start = prep['gt_start'][det_group[rows_gt]]
    d_count = prep['gt_count'][det_group[rows_gt]]
    row_first = np.zeros(len(rows_gt) + 1, np.int64)
    np.cumsum(d_count, out=row_first[1:])
    ious = np.empty(int(row_first[-1]), np.float64)
    if iou_type == 'segm':
        _mask_ious(gt, dets, prep['kept'], rows_gt, d_start, d_count,
                   row_first, ious)
        return rows_gt, row_first, ious
    xywh = prep['xywh']
    step, lo = 1 << 20, 0  # about a million pairs at a time
    while lo < len(rows_gt):
        hi = int(np.searchsorted(row_first, row_first[lo] + step))
        hi = min(max(hi, lo + 1), len(rows_gt))
        prow, pcol = _pair_index(d_start[lo:hi], d_count[lo:hi])
        ious[row_first[lo]:row_first[hi]] = _box_iou_pairs(
            xywh[rows_gt[lo:hi]][prow], gt.boxes[pcol])
        lo = hi
    return rows_gt, row_first, ious


def match_candidates(ious: np.ndarray, rows_gt: np.ndarray,
                     row_first: np.ndarray, prep: dict,
                     gt: LVISGroundTruth,
                     gt_ignore: np.ndarray) -> Tuple[np.ndarray, int]:
    """lvis-api's matching of every evaluated detection.

    Returns:
        tuple[np.ndarray, int]: ``(len(prep['kept']), A, T)`` int8 codes
        (see :func:`_match`) and the number of candidates: only detections
        reaching the lowest threshold with some ground truth can match, the
        others stay 0.
    """
    det_group = prep['det_group']
    if len(rows_gt) and len(ious):
        is_cand = np.maximum.reduceat(ious, row_first[:-1]) >= IOU_THRS[0]
    else:
        is_cand = np.zeros(len(rows_gt), bool)
    cand_rows = rows_gt[is_cand]
    # the ground-truth groups, rank among a group's candidates
    cgroups, cinv = np.unique(det_group[cand_rows], return_inverse=True)
    cstart, clen = _segments(cinv)
    crank = np.arange(len(cinv)) - np.repeat(cstart, clen)
    codes = _match(ious, row_first[:-1][is_cand], cinv, crank,
                   prep['gt_start'][cgroups], prep['gt_count'][cgroups],
                   gt_ignore, gt.ids != 0)
    code = np.zeros((len(prep['kept']), ) + codes.shape[1:], np.int8)
    code[cand_rows] = codes
    return code, len(cand_rows)


def _box_iou_pairs(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` (xywh, no crowd) for aligned pairs, with its
    float64 operations in its order (bit-identical)."""
    w = (np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) -
         np.maximum(dt[:, 0], gt[:, 0]))
    h = (np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) -
         np.maximum(dt[:, 1], gt[:, 1]))
    inter = w * h
    union = dt[:, 2] * dt[:, 3] + gt[:, 2] * gt[:, 3] - inter
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _pair_index(start: np.ndarray, count: np.ndarray):
    """For rows with ``count`` ground truths starting at ``start``: the row
    and ground-truth index of every pair, rows in order."""
    rows = np.repeat(np.arange(len(count)), count)
    first = np.cumsum(count) - count
    cols = np.repeat(start - first, count) + np.arange(int(count.sum()))
    return rows, cols


def _mask_ious(gt, dets, kept, rows_gt, d_start, d_count, row_first, ious):
    """Mask IoUs (``pycocotools.mask.iou``, one call per image)."""
    if len(rows_gt) == 0:
        return
    det_ids = kept[rows_gt]
    det_img = dets.img[det_ids]
    starts, lengths = _segments(det_img)
    for s, n in zip(starts.tolist(), lengths.tolist()):
        img = int(det_img[s])
        g0, g1 = int(gt.img_start[img]), int(gt.img_start[img + 1])
        dt_rles = []
        for det in det_ids[s:s + n].tolist():
            counts = dets.mask_rle(det)
            if counts is None:
                raise RuntimeError(
                    f'no mask for detection {det} (image '
                    f'{gt.img_ids[img]}), of a category annotated in its '
                    'image: FastLVISMetric.process encodes the masks of the '
                    'best max_dets detections of those categories')
            rec = dets.records[dets.rec[det]]
            dt_rles.append(dict(size=list(rec['mask_size']), counts=counts))
        matrix = np.asarray(
            mask_utils.iou(dt_rles, gt.rles[g0:g1], [0] * (g1 - g0)))
        prow, pcol = _pair_index(d_start[s:s + n] - g0, d_count[s:s + n])
        ious[row_first[s]:row_first[s + n]] = matrix[prow, pcol]


def _match(ious: np.ndarray, cand_first: np.ndarray, cand_group: np.ndarray,
           cand_rank: np.ndarray, group_start: np.ndarray,
           group_count: np.ndarray, gt_ignore: np.ndarray,
           gt_id_nonzero: np.ndarray) -> np.ndarray:
    """lvis-api's greedy matching for every (group, area range, threshold).

    Args:
        ious: flat IoUs; candidate ``c`` has those with the ground truths
            of its group (lvis-api's ground-truth order) at
            ``ious[cand_first[c]:cand_first[c] + group_count[group]]``.
        cand_first, cand_group, cand_rank: where its IoUs start, its group
            and its rank (score order) among the candidates of its group.
        group_start, group_count: the group's ground truths (rows of
            ``gt_ignore``).
        gt_ignore: ``(G, A)`` ignore flag of each ground truth per area
            range.
        gt_id_nonzero: ``(G, )`` (lvis-api marks a match with the id).

    Returns:
        np.ndarray: ``(num_candidates, A, T)`` int8: 0 unmatched, 1 matched
        to a regular ground truth, 2 matched to an ignored one.

    Detections whose IoUs are all below the lowest threshold never match
    and do not change the others' matches, so only candidates are passed.
    The scan of lvis-api (ground truths sorted regular first, stable) picks
    the unmatched regular ground truth of highest IoU >= threshold (the last
    of equal ones), else the ignored one of highest IoU.  All groups advance
    together, one detection rank per step.
    """
    num_areas = gt_ignore.shape[1]
    thrs = IOU_THRS
    num_thrs = len(thrs)
    out = np.zeros((len(cand_group), num_areas, num_thrs), np.int8)
    if len(cand_group) == 0:
        return out
    n_of = group_count[cand_group]
    # buckets of groups by ground-truth count (padded to a power of two)
    width = 1 << np.ceil(np.log2(np.maximum(n_of, 1))).astype(np.int64)
    for pad in np.unique(width).tolist():
        sel = np.flatnonzero(width == pad)
        groups, local = np.unique(cand_group[sel], return_inverse=True)
        ng = len(groups)
        slot = np.arange(pad)
        valid = slot[None, :] < group_count[groups][:, None]
        gidx = np.where(valid, group_start[groups][:, None] + slot, 0)
        ig = np.where(valid[:, None, :],
                      gt_ignore[gidx].transpose(0, 2, 1), False)
        nonzero_id = np.where(valid, gt_id_nonzero[gidx], False)
        iou = np.full((len(sel), pad), -1.0)
        prow, pcol = _pair_index(np.zeros(len(sel), np.int64), n_of[sel])
        iou[prow, pcol] = ious[cand_first[sel][prow] + pcol]
        ranks = cand_rank[sel]
        order = np.argsort(ranks, kind='stable')
        bounds = np.searchsorted(ranks[order], np.arange(ranks.max() + 2))
        matched = np.zeros((ng, num_areas, num_thrs, pad), bool)
        for r in range(len(bounds) - 1):
            rows = order[bounds[r]:bounds[r + 1]]
            if rows.size == 0:
                continue
            g = local[rows]
            val = iou[rows][:, None, None, :]
            q = (val >= thrs[None, None, :, None]) & ~matched[g]
            gig = ig[g][:, :, None, :]
            reg = q & ~gig
            cand = np.where(reg.any(-1, keepdims=True), reg, q & gig)
            score = np.where(cand, val, -1.0)
            best = score.max(-1, keepdims=True)
            hit = cand & (score == best)
            j = pad - 1 - np.argmax(hit[..., ::-1], axis=-1)
            ri, ai, ti = np.nonzero(cand.any(-1))
            ji = j[ri, ai, ti]
            gi = g[ri]
            matched[gi, ai, ti, ji] = True
            code = np.where(ig[gi, ai, ji], 2,
                            np.where(nonzero_id[gi, ji], 1, 0))
            out[sel[rows[ri]], ai, ti] = code
    return out

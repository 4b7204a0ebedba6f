# Copyright (c) icar_dense contributors. All rights reserved.
"""LVIS box / mask AP with lvis-api's numbers, in bounded time and memory.

mmdet's ``LVISMetric`` keeps every detection of the test set as a Python dict
(about 3.5 KB per box: ~22 GB for LVIS v1 val's 5.9M detections), writes them
to JSON, reads them back into lvis-api and evaluates one (image, category,
area range) at a time in Python; before that, ``process`` RLE-encodes every
full-image mask (0.36 s per image of 300 masks).  :class:`FastLVISMetric`
computes the same numbers (AP, AP50, AP75, APs/m/l, APr/c/f and lvis-api's
AR@300, box and mask) from arrays:

* ``process`` keeps, per image, the boxes (float32), scores (float32) and
  labels (int32) as numpy arrays and the masks as compressed RLE bytes in one
  blob (plus offsets).  Only the masks LVIS can look at are encoded: those of
  the (at most) 300 best detections whose category is annotated as present in
  the image (a detection of any other category has no ground truth to be
  compared with -- it is a false positive, ignored or dropped whatever its
  mask).  Each mask is cropped to the columns it occupies before its runs are
  found, and the RLE of the full image is assembled from those of the crop
  (the same bytes ``pycocotools.mask.encode`` gives for the full mask).
  Multi-process evaluation gathers these compact records (mmengine's
  ``collect_results``): rank 0 never holds one Python object per detection.
* ``compute_metrics`` evaluates all images and categories at once with numpy:
  IoUs of the (detection, ground truth) pairs of the same image and category
  (boxes: pycocotools' ``bbIou`` arithmetic, vectorised; masks:
  ``pycocotools.mask.iou`` per image), lvis-api's greedy matching run for all
  groups in parallel (one step per detection rank), and its precision /
  recall accumulation per category.

What lvis-api 0.5.3 does, as mmdet's ``LVISMetric`` calls it, and this module
reproduces (``tests/test_lvis_metric.py`` compares the two):

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

Images without predictions count as images with no detections.  Metric keys
and rounding are those of mmdet's ``LVISMetric`` (``lvis/bbox_AP``, ...,
three decimals); the unrounded numbers are in ``self.last_results``.
"""
import itertools
import json
import math
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger

from mmdet.registry import METRICS

__all__ = [
    'FastLVISMetric', 'LVISGroundTruth', 'LVISDetections', 'evaluate_lvis',
    'encode_mask_rles', 'compress_rle_counts', 'IOU_THRS', 'REC_THRS'
]

# lvis-api's Params
IOU_THRS = np.linspace(
    .5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
REC_THRS = np.linspace(
    0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2),
               (96**2, 1e5**2))
AREA_LABELS = ('all', 'small', 'medium', 'large')
FREQ_LABELS = ('r', 'c', 'f')
MAX_DETS = 300
RESULT_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
               'APf', 'AR@300', 'ARs@300', 'ARm@300', 'ARl@300')


# ----------------------------------------------------------------------
# ground truth
# ----------------------------------------------------------------------
def _ann_rle(segm, height: int, width: int) -> dict:
    """lvis-api's ``LVIS.ann_to_rle``: one compressed RLE."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm['counts'], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


class LVISGroundTruth:
    """The annotations of an LVIS file as arrays (no per-annotation dicts).

    Images and categories are indexed by their position among the sorted
    ids (``img_ids``, ``cat_ids``), the order lvis-api evaluates them in;
    ``label_to_cat`` maps mmdet's labels (category order of the file) to
    category positions.  The annotations kept are those lvis-api evaluates
    (area in ``(0, inf)``, image in the file), sorted by image, category and
    file order; ``pos_keys`` / ``neg_keys`` / ``nel_keys`` are the sorted
    ``image * num_cats + category`` keys of the categories annotated in /
    listed as absent from / not exhaustively annotated in each image.
    """

    def __init__(self, dataset: dict, with_masks: bool = False):
        cats = dataset['categories']
        # LVIS.get_cat_ids(): the keys of a dict filled in file order
        self.file_cat_ids = list(dict.fromkeys(int(c['id']) for c in cats))
        freq = {int(c['id']): c.get('frequency') for c in cats}
        self.cat_ids = np.array(sorted(self.file_cat_ids), dtype=np.int64)
        self.num_cats = len(self.cat_ids)
        self.label_to_cat = np.searchsorted(
            self.cat_ids, np.array(self.file_cat_ids, dtype=np.int64))
        self.cat_names = {int(c['id']): c.get('name', str(c['id']))
                          for c in cats}
        self.freq_groups = [[] for _ in FREQ_LABELS]
        for idx, cat_id in enumerate(self.cat_ids.tolist()):
            if freq[cat_id] not in FREQ_LABELS:
                raise KeyError(f'LVIS category {cat_id} has frequency '
                               f'{freq[cat_id]!r}: one of r, c, f expected')
            self.freq_groups[FREQ_LABELS.index(freq[cat_id])].append(idx)

        images = {int(img['id']): img for img in dataset['images']}
        self.img_ids = np.array(sorted(images), dtype=np.int64)
        self.num_imgs = len(self.img_ids)
        self.heights = np.array(
            [images[i]['height'] for i in self.img_ids.tolist()], np.int64)
        self.widths = np.array(
            [images[i]['width'] for i in self.img_ids.tolist()], np.int64)
        self.neg_keys = self._image_cat_keys(images, 'neg_category_ids')
        self.nel_keys = self._image_cat_keys(images,
                                             'not_exhaustive_category_ids')

        anns = dataset['annotations']
        num = len(anns)
        img = np.fromiter((a['image_id'] for a in anns), np.int64, num)
        cat = np.fromiter((a['category_id'] for a in anns), np.int64, num)
        area = np.fromiter((a['area'] for a in anns), np.float64, num)
        img_pos = np.searchsorted(self.img_ids, img)
        cat_pos = np.searchsorted(self.cat_ids, cat)
        valid = img_pos < self.num_imgs
        valid[valid] &= self.img_ids[img_pos[valid]] == img[valid]
        valid &= cat_pos < self.num_cats
        valid[valid] &= self.cat_ids[cat_pos[valid]] == cat[valid]
        keep = valid & (area > 0) & (area < math.inf)
        index = np.flatnonzero(keep)
        # by image, category, file order (lvis-api's per-group order)
        index = index[np.lexsort((index, cat_pos[index], img_pos[index]))]
        self.index = index
        self.img = img_pos[index].astype(np.int32)
        self.cat = cat_pos[index].astype(np.int32)
        self.area = area[index]
        self.ids = np.fromiter((anns[i]['id'] for i in index.tolist()),
                               np.int64, len(index))
        self.ignore = np.fromiter(
            (bool(anns[i].get('ignore', 0)) for i in index.tolist()), bool,
            len(index))
        self.boxes = np.array([anns[i]['bbox'] for i in index.tolist()],
                              dtype=np.float64).reshape(-1, 4)
        keys = self.img.astype(np.int64) * self.num_cats + self.cat
        self.keys = keys
        self.pos_keys, self.group_start, self.group_count = np.unique(
            keys, return_index=True, return_counts=True)
        self.img_start = np.searchsorted(self.img,
                                         np.arange(self.num_imgs + 1))
        # every category annotated in an image, whatever its area (the
        # masks worth encoding)
        self.any_pos_keys = np.unique(img_pos[valid] * self.num_cats +
                                      cat_pos[valid])
        self.rles = None
        if with_masks:
            self.rles = []
            for i, pos in zip(index.tolist(), self.img.tolist()):
                rle = _ann_rle(anns[i]['segmentation'],
                               int(self.heights[pos]), int(self.widths[pos]))
                counts = rle['counts']
                if isinstance(counts, str):
                    counts = counts.encode()
                self.rles.append(
                    dict(size=[int(v) for v in rle['size']], counts=counts))

    def _image_cat_keys(self, images: dict, field: str) -> np.ndarray:
        keys = []
        for pos, img_id in enumerate(self.img_ids.tolist()):
            ids = np.asarray(images[img_id].get(field) or [], np.int64)
            cats = np.searchsorted(self.cat_ids, ids)
            ok = cats < self.num_cats
            ok[ok] &= self.cat_ids[cats[ok]] == ids[ok]
            keys.append(pos * self.num_cats + cats[ok])
        if not keys:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate(keys))

    @classmethod
    def from_file(cls,
                  path: str,
                  with_masks: bool = False,
                  backend_args: Optional[dict] = None) -> 'LVISGroundTruth':
        with get_local_path(path, backend_args=backend_args) as local:
            with open(local, 'r', encoding='utf-8') as f:
                dataset = json.load(f)
        for field in ('images', 'annotations', 'categories'):
            if field not in dataset:
                raise KeyError(f'{path}: not an LVIS annotation file (no '
                               f'{field!r})')
        for img in dataset['images'][:1]:
            for field in ('neg_category_ids', 'not_exhaustive_category_ids'):
                if field not in img:
                    raise KeyError(
                        f'{path}: image {img.get("id")} has no {field!r}; '
                        'LVIS evaluation needs the LVIS v1 image fields')
        return cls(dataset, with_masks=with_masks)

    def image_position(self, img_id: int) -> int:
        pos = int(np.searchsorted(self.img_ids, img_id))
        if pos >= self.num_imgs or self.img_ids[pos] != img_id:
            return -1
        return pos


# ----------------------------------------------------------------------
# detections
# ----------------------------------------------------------------------
def _to_numpy(value, dtype) -> np.ndarray:
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def compress_rle_counts(counts: np.ndarray,
                        offsets: np.ndarray) -> Tuple[bytes, np.ndarray]:
    """pycocotools' ``rleToString`` for many masks at once (numpy).

    Args:
        counts: the uncompressed RLE counts of all masks, concatenated.
        offsets: ``(N + 1, )`` start of each mask's counts.

    Returns:
        tuple[bytes, np.ndarray]: the compressed strings, concatenated, and
        the ``(N + 1, )`` offsets of each in the blob.  Each value (from the
        third on, minus the count two before it) is written as 5-bit groups
        with a continuation bit, plus 48, as pycocotools does.
    """
    counts = np.asarray(counts, np.int64)
    offsets = np.asarray(offsets, np.int64)
    num = len(counts)
    sizes = np.diff(offsets)
    mask_of = np.repeat(np.arange(len(sizes)), sizes)
    x = counts.copy()
    later = np.flatnonzero(np.arange(num) - offsets[:-1][mask_of] > 2)
    x[later] -= counts[later - 2]
    # groups written: the fewest k with x in [-2^(5k-1), 2^(5k-1))
    if num and max(int(x.max()), -int(x.min())) < (1 << 30):
        x = x.astype(np.int32)
    mag = np.where(x < 0, ~x, x)
    nchunks = np.ones(num, np.int64)
    for k in range(1, 8):
        big = mag >= (1 << (5 * k - 1))
        if not big.any():
            break
        nchunks += big
    width = int(nchunks.max()) if num else 1
    step = np.arange(width, dtype=x.dtype)
    chars = ((x[:, None] >> (5 * step)) & 0x1f).astype(np.uint8)
    used = step[None, :] < nchunks[:, None]
    chars[step[None, :] < nchunks[:, None] - 1] |= 0x20
    chars += 48
    blob = chars[used].tobytes()
    ends = np.concatenate(([0], np.cumsum(nchunks)))
    return blob, ends[offsets]


def _column_runs(flat: np.ndarray, lead: int, trail: int) -> np.ndarray:
    """Uncompressed RLE counts of ``lead`` zeros, ``flat``, ``trail``
    zeros (pycocotools' convention: the first count is zeros)."""
    if flat.size == 0:
        return np.array([lead + trail], dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).astype(np.int64)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    counts[0] += lead
    if trail:
        if len(counts) % 2:  # ends with zeros
            counts[-1] += trail
        else:
            counts = np.concatenate((counts, [trail]))
    return counts


def encode_mask_rles(masks, need: Optional[np.ndarray] = None
                     ) -> Tuple[bytes, np.ndarray]:
    """Compressed RLE of the masks selected by ``need``, as one blob.

    Args:
        masks: ``(N, H, W)`` bool / uint8 tensor (any device) or array, or a
            list of RLE dicts (already encoded).
        need (np.ndarray, optional): ``(N, )`` bool, the masks to encode;
            the others get an empty entry.  Default: all.

    Returns:
        tuple[bytes, np.ndarray]: the concatenated ``counts`` strings and the
        ``(N + 1, )`` int64 offsets of each mask's string in it; each string
        equals ``pycocotools.mask.encode``'s for the full mask.  Each mask is
        cropped to the columns it occupies (one pass over the selected masks
        finds them) and its full-image runs are derived from the crop's.
    """
    if isinstance(masks, (list, tuple)):
        num = len(masks)
        sel = np.ones(num, bool) if need is None else np.asarray(need, bool)
        parts = []
        for i in range(num):
            if not sel[i]:
                parts.append(b'')
                continue
            counts = masks[i]['counts']
            if isinstance(counts, list):  # uncompressed
                size = masks[i]['size']
                counts = mask_utils.frPyObjects(masks[i], size[0],
                                                size[1])['counts']
            parts.append(counts.encode() if isinstance(counts, str) else
                         bytes(counts))
        return _pack(parts)
    import torch
    num, height, width = masks.shape
    sel = np.ones(num, bool) if need is None else np.asarray(need, bool)
    idx = np.flatnonzero(sel)
    if idx.size == 0:
        return b'', np.zeros(num + 1, np.int64)
    runs = []
    if isinstance(masks, torch.Tensor) and masks.device.type != 'cpu':
        # on the device: only the occupied columns of each mask travel
        chosen = masks[torch.as_tensor(idx, device=masks.device)] != 0
        occupied = chosen.any(1).cpu().numpy()  # (n, W)
        for j in range(len(idx)):
            cols = np.flatnonzero(occupied[j])
            if cols.size == 0:
                runs.append(np.array([height * width], np.int64))
                continue
            c0, c1 = int(cols[0]), int(cols[-1]) + 1
            flat = chosen[j, :, c0:c1].t().contiguous().view(-1).cpu()
            runs.append(_column_runs(flat.numpy(), c0 * height,
                                     (width - c1) * height))
        del chosen
    else:
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().numpy()  # no copy
        masks = np.asarray(masks)
        for i in idx.tolist():
            mask = masks[i]
            if mask.dtype != bool:
                mask = mask != 0
            cols = np.flatnonzero(mask.any(0))
            if cols.size == 0:
                runs.append(np.array([height * width], np.int64))
                continue
            c0, c1 = int(cols[0]), int(cols[-1]) + 1
            # column-major pixels of the crop: a contiguous part of the
            # image's column-major pixels
            flat = mask[:, c0:c1].T.ravel()
            runs.append(_column_runs(flat, c0 * height,
                                     (width - c1) * height))
    run_offsets = np.zeros(len(runs) + 1, np.int64)
    np.cumsum([len(r) for r in runs], out=run_offsets[1:])
    blob, needed = compress_rle_counts(np.concatenate(runs), run_offsets)
    lengths = np.zeros(num, np.int64)
    lengths[idx] = np.diff(needed)
    offsets = np.zeros(num + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return blob, offsets


def _pack(parts: List[bytes]) -> Tuple[bytes, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return b''.join(parts), offsets


class LVISDetections:
    """The per-image records of :class:`FastLVISMetric` as flat arrays.

    ``img`` (image position), ``local`` (index of the detection among its
    image's detections, in the order they were predicted), ``boxes``
    (float32 x1y1x2y2), ``scores``, ``mask_scores``, ``cats`` (category
    positions); masks stay in their records' blobs (``rec`` / ``rec_index``
    point to them).
    """

    def __init__(self, records: Sequence[dict], gt: LVISGroundTruth):
        self.records = records
        counts = np.array([len(r['scores']) for r in records], np.int64)
        img = np.empty(len(records), np.int64)
        seen: Dict[int, int] = {}
        base = np.zeros(len(records), np.int64)
        unknown = []
        for i, r in enumerate(records):
            pos = gt.image_position(int(r['img_id']))
            if pos < 0:
                unknown.append(int(r['img_id']))
            img[i] = pos
            # a second record of the same image continues its numbering
            base[i] = seen.get(pos, 0)
            seen[pos] = base[i] + counts[i]
        if unknown:
            raise ValueError(
                f'{len(unknown)} predicted images are not in the LVIS '
                f'annotation file (e.g. img_id {unknown[:3]}): lvis-api '
                'refuses such results ("Results do not correspond to current '
                'LVIS set")')
        total = int(counts.sum())
        self.num = total
        self.rec = np.repeat(np.arange(len(records), dtype=np.int32), counts)
        starts = np.cumsum(counts) - counts
        self.rec_index = (np.arange(total, dtype=np.int64) -
                          np.repeat(starts, counts)).astype(np.int32)
        self.img = np.repeat(img, counts).astype(np.int32)
        self.local = (self.rec_index + np.repeat(base, counts)).astype(
            np.int32)

        def cat(key, dtype, shape=()):
            parts = [np.asarray(r[key], dtype).reshape((-1, ) + shape)
                     for r in records]
            if not parts:
                return np.zeros((0, ) + shape, dtype)
            return np.concatenate(parts)

        self.boxes = cat('bboxes', np.float32, (4, ))
        self.scores = cat('scores', np.float32)
        labels = cat('labels', np.int64)
        if labels.size and (labels.min() < 0
                            or labels.max() >= len(gt.label_to_cat)):
            raise ValueError(
                f'labels in [{labels.min()}, {labels.max()}] but the LVIS '
                f'file has {len(gt.label_to_cat)} categories')
        self.cats = gt.label_to_cat[labels].astype(np.int32)
        if any(r.get('mask_scores') is not None for r in records):
            self.mask_scores = np.concatenate([
                np.asarray(
                    r['mask_scores'] if r.get('mask_scores') is not None else
                    r['scores'], np.float32).reshape(-1) for r in records
            ]) if records else np.zeros(0, np.float32)
        else:
            self.mask_scores = self.scores

    def mask_rle(self, index: int) -> Optional[bytes]:
        rec = self.records[self.rec[index]]
        offsets = rec.get('mask_offsets')
        if offsets is None:
            return None
        j = self.rec_index[index]
        start, end = int(offsets[j]), int(offsets[j + 1])
        if end == start:
            return None
        return rec['mask_rles'][start:end]


# ----------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------
def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_set)`` for a sorted, unique ``sorted_set``
    (binary search: no sort of the set per call)."""
    if len(sorted_set) == 0:
        return np.zeros(np.shape(keys), bool)
    pos = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    return sorted_set[pos] == keys


def _segments(sorted_keys: np.ndarray):
    """Starts and lengths of the runs of equal values."""
    if sorted_keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate(
        ([0], np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [sorted_keys.size])))
    return starts, lengths


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
    """LVIS AP of ``dets`` (lvis-api 0.5.3's numbers, see module doc).

    Args:
        cache (dict, optional): Shared by the calls for box and mask AP of
            the same detections: the selection of the evaluated detections
            is made once when both use the same scores.

    Returns:
        dict: ``results`` (AP, AP50, ..., APr, APc, APf, AR@300, ...),
        ``precision`` ``(T, R, K, A)`` and ``recall`` ``(T, K, A)`` as in
        ``LVISEval.eval``.
    """
    if iou_type not in ('bbox', 'segm'):
        raise ValueError(f'iou_type {iou_type!r}: bbox or segm')
    if iou_type == 'segm' and gt.rles is None:
        raise ValueError('the ground truth was loaded without masks')
    t0 = time.perf_counter()
    num_cats = gt.num_cats
    num_areas = len(AREA_RANGES)
    num_thrs = len(IOU_THRS)
    raw = dets.mask_scores if iou_type == 'segm' else dets.scores
    cache_key = (id(raw), max_dets)
    if cache is not None and cache_key in cache:
        prep = cache[cache_key]
    else:
        prep = _prepare(gt, dets, raw.astype(np.float64), max_dets)
        if cache is not None:
            cache[cache_key] = prep
    kept, xywh, area, key = prep['kept'], prep['xywh'], prep['area'], \
        prep['key']
    score, local, in_nel = prep['score'], prep['local'], prep['in_nel']
    det_group, gt_start, gt_count = prep['det_group'], prep['gt_start'], \
        prep['gt_count']
    num = len(kept)
    det_has_gt = prep['has_gt'][det_group]
    t1 = time.perf_counter()

    # 4. IoUs of each detection with its group's ground truths
    rows_gt = np.flatnonzero(det_has_gt)
    d_start = gt_start[det_group[rows_gt]]
    d_count = gt_count[det_group[rows_gt]]
    row_first = np.zeros(len(rows_gt) + 1, np.int64)
    np.cumsum(d_count, out=row_first[1:])
    ious = np.empty(int(row_first[-1]), np.float64)
    if iou_type == 'bbox':
        step = 1 << 20
        lo = 0
        while lo < len(rows_gt):
            hi = int(np.searchsorted(row_first, row_first[lo] + step))
            hi = max(hi, lo + 1)
            hi = min(hi, len(rows_gt))
            prow, pcol = _pair_index(d_start[lo:hi], d_count[lo:hi])
            ious[row_first[lo]:row_first[hi]] = _box_iou_pairs(
                xywh[rows_gt[lo:hi]][prow], gt.boxes[pcol])
            lo = hi
    else:
        _mask_ious(gt, dets, kept, rows_gt, d_start, d_count, row_first,
                   ious)
    t2 = time.perf_counter()

    # 5. matching: only detections reaching the lowest threshold can match
    if len(rows_gt):
        best = np.maximum.reduceat(ious, row_first[:-1]) if len(
            ious) else np.zeros(0)
        is_cand = best >= IOU_THRS[0]
    else:
        is_cand = np.zeros(0, bool)
    cand_rows = rows_gt[is_cand]
    cand_group_of_det = det_group[cand_rows]
    # group ids of the ground-truth groups, rank among a group's candidates
    cgroups, cinv = np.unique(cand_group_of_det, return_inverse=True)
    cstart, clen = _segments(cinv)
    crank = np.arange(len(cinv)) - np.repeat(cstart, clen)
    gt_ig = np.zeros((len(gt.area), num_areas), bool)
    for a, (lo_a, hi_a) in enumerate(AREA_RANGES):
        gt_ig[:, a] = gt.ignore | (gt.area < lo_a) | (gt.area > hi_a)
    codes = _match(ious, row_first[:-1][is_cand], cinv, crank,
                   gt_start[cgroups], gt_count[cgroups], gt_ig, gt.ids != 0)
    code = np.zeros((num, num_areas, num_thrs), np.int8)
    code[cand_rows] = codes
    del ious
    t3 = time.perf_counter()

    # 6. accumulate per category and area range (LVISEval.accumulate)
    num_rec = len(REC_THRS)
    precision = -np.ones((num_thrs, num_rec, num_cats, num_areas))
    recall = -np.ones((num_thrs, num_cats, num_areas))
    num_gt = np.zeros((num_cats, num_areas), np.int64)
    for a in range(num_areas):
        num_gt[:, a] = np.bincount(
            gt.cat[~gt_ig[:, a]], minlength=num_cats)[:num_cats]
    det_cat = (key % num_cats).astype(np.int64)
    det_img = (key // num_cats).astype(np.int64)
    order = np.lexsort((local, det_img, -score, det_cat))
    cat_sorted = det_cat[order]
    bounds = np.searchsorted(cat_sorted, np.arange(num_cats + 1))
    out_of_range = np.stack(
        [(area < lo_a) | (area > hi_a) for lo_a, hi_a in AREA_RANGES], 1)
    out_of_range |= in_nel[:, None]
    eps = np.spacing(1)
    for k in range(num_cats):
        if not num_gt[k].any():
            continue
        idx = order[bounds[k]:bounds[k + 1]]
        ck = code[idx]  # (n, A, T)
        mk = out_of_range[idx]  # (n, A)
        n = len(idx)
        for a in range(num_areas):
            ngt = num_gt[k, a]
            if ngt == 0:
                continue
            if n == 0:
                recall[:, k, a] = 0
                precision[:, :, k, a] = 0.0
                continue
            c = ck[:, a, :].T  # (T, n)
            tps = c == 1
            fps = (c == 0) & ~mk[None, :, a]
            tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
            fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
            rc = tp_sum / ngt
            recall[:, k, a] = rc[:, -1]
            pr = tp_sum / (fp_sum + tp_sum + eps)
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(num_thrs):
                ins = np.searchsorted(rc[t], REC_THRS, side='left')
                q = np.zeros(num_rec)
                inside = ins < n
                q[inside] = pr[t, ins[inside]]
                precision[t, :, k, a] = q
    t4 = time.perf_counter()
    results = _summarize(precision, recall, gt.freq_groups)
    if timings is not None:
        timings.update(
            prepare_s=round(t1 - t0, 3),
            iou_s=round(t2 - t1, 3),
            match_s=round(t3 - t2, 3),
            accumulate_s=round(t4 - t3, 3),
            detections_evaluated=int(num),
            candidate_detections=int(len(cand_rows)))
    return dict(results=results, precision=precision, recall=recall)


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


# ----------------------------------------------------------------------
# the metric
# ----------------------------------------------------------------------
@METRICS.register_module()
class FastLVISMetric(BaseMetric):
    """mmdet's ``LVISMetric`` (bbox / segm) in bounded time and memory.

    Same arguments, metric keys (``lvis/bbox_AP``, ``lvis/segm_APr``, ...)
    and numbers as ``mmdet.evaluation.LVISMetric``; see the module
    docstring for how.  ``proposal`` / ``proposal_fast`` are not provided
    (use mmdet's ``LVISMetric`` for them); ``iou_thrs`` and
    ``proposal_nums`` are accepted and, as in mmdet for bbox / segm, not
    used.

    Args:
        ann_file (str): The LVIS annotation file (required: the LVIS image
            fields ``neg_category_ids`` / ``not_exhaustive_category_ids``
            are not in mmdet's data samples).
        metric (str | list[str]): ``'bbox'`` and / or ``'segm'``.
        classwise (bool): Also report each category's AP (as mmdet).
        metric_items (list[str], optional): Keys of lvis-api's results to
            report; default AP, AP50, AP75, APs, APm, APl, APr, APc, APf.
        format_only (bool): Only write the results (``outfile_prefix``).
        outfile_prefix (str, optional): Write ``<prefix>.bbox.json`` /
            ``<prefix>.segm.json`` in mmdet's format (every mask is then
            encoded).
        max_dets (int): Detections per image (LVIS: 300).
        encode_all_masks (bool): Encode every mask in ``process`` (default:
            only those LVIS evaluates).
    """

    default_prefix: Optional[str] = 'lvis'

    def __init__(self,
                 ann_file: Optional[str] = None,
                 metric: Union[str, List[str]] = 'bbox',
                 classwise: bool = False,
                 proposal_nums: Sequence[int] = (100, 300, 1000),
                 iou_thrs: Optional[Union[float, Sequence[float]]] = None,
                 metric_items: Optional[Sequence[str]] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 max_dets: int = MAX_DETS,
                 encode_all_masks: bool = False,
                 file_client_args: Optional[dict] = None) -> None:
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir)
        if file_client_args is not None:
            raise RuntimeError('`file_client_args` is deprecated, use '
                               '`backend_args` instead')
        self.metrics = list(metric) if isinstance(metric,
                                                  (list, tuple)) else [metric]
        for m in self.metrics:
            if m in ('proposal', 'proposal_fast'):
                raise KeyError(
                    f'FastLVISMetric: metric {m!r} is not provided; use '
                    "mmdet's LVISMetric for proposal recall")
            if m not in ('bbox', 'segm'):
                raise KeyError(f"metric should be 'bbox' or 'segm', got "
                               f'{m!r}')
        if ann_file is None:
            raise ValueError(
                'FastLVISMetric needs ann_file: LVIS evaluation reads each '
                "image's neg_category_ids and not_exhaustive_category_ids "
                'from the annotation file')
        if metric_items is not None:
            unknown = set(metric_items) - set(RESULT_KEYS)
            if unknown:
                raise KeyError(f'metric_items {sorted(unknown)}: not among '
                               f'{list(RESULT_KEYS)}')
        if format_only and outfile_prefix is None:
            raise ValueError('format_only needs outfile_prefix')
        self.ann_file = ann_file
        self.classwise = classwise
        self.proposal_nums = list(proposal_nums)
        self.iou_thrs = iou_thrs
        self.metric_items = metric_items
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.backend_args = backend_args
        self.max_dets = max_dets
        self.encode_all_masks = encode_all_masks or outfile_prefix is not None
        self._gt: Optional[LVISGroundTruth] = None
        self.last_results: Dict[str, dict] = {}
        self.last_timings: Dict[str, dict] = {}

    # ------------------------------------------------------------------
    @property
    def gt(self) -> LVISGroundTruth:
        """The annotations, read on first use (by every rank)."""
        if self._gt is None:
            self._gt = LVISGroundTruth.from_file(
                self.ann_file,
                with_masks='segm' in self.metrics,
                backend_args=self.backend_args)
        return self._gt

    def _needed_masks(self, img_id: int, labels: np.ndarray,
                      scores: np.ndarray) -> Optional[np.ndarray]:
        """The masks LVIS evaluates: the max_dets best detections whose
        category is annotated in the image (None: all)."""
        if self.encode_all_masks:
            return None
        gt = self.gt
        pos = gt.image_position(img_id)
        need = np.zeros(len(labels), bool)
        if pos < 0 or len(labels) == 0:
            return need
        if labels.min() < 0 or labels.max() >= len(gt.label_to_cat):
            return None  # compute_metrics reports it
        keys = pos * gt.num_cats + gt.label_to_cat[labels]
        need = _member(keys, gt.any_pos_keys)
        if self.max_dets >= 0 and len(scores) > self.max_dets:
            top = np.argsort(-scores.astype(np.float64),
                             kind='stable')[:self.max_dets]
            in_top = np.zeros(len(scores), bool)
            in_top[top] = True
            need &= in_top
        return need

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as arrays (masks: RLE bytes)."""
        for sample in data_samples:
            pred = sample['pred_instances']
            rec = dict(
                img_id=int(sample['img_id']),
                bboxes=_to_numpy(pred['bboxes'], np.float32).reshape(-1, 4),
                scores=_to_numpy(pred['scores'], np.float32).reshape(-1),
                labels=_to_numpy(pred['labels'], np.int32).reshape(-1))
            if 'mask_scores' in pred:
                rec['mask_scores'] = _to_numpy(pred['mask_scores'],
                                               np.float32).reshape(-1)
            if 'masks' in pred and 'segm' in self.metrics:
                need = self._needed_masks(
                    rec['img_id'], rec['labels'],
                    rec.get('mask_scores', rec['scores']))
                blob, offsets = encode_mask_rles(pred['masks'], need)
                rec['mask_rles'] = blob
                rec['mask_offsets'] = offsets
                rec['mask_size'] = tuple(int(s) for s in _mask_size(
                    pred['masks'], sample))
            self.results.append(rec)

    # ------------------------------------------------------------------
    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        gt = self.gt
        dets = LVISDetections(results, gt)
        eval_results = OrderedDict()
        if self.outfile_prefix is not None:
            files = self.results2json(dets, gt, self.outfile_prefix)
            logger.info(f'results are saved in {files}')
            if self.format_only:
                return eval_results
        if dets.num == 0:
            logger.info('The testing results of the whole dataset is empty.')
            return eval_results
        if 'segm' in self.metrics and not any(
                r.get('mask_offsets') is not None for r in results):
            raise KeyError("FastLVISMetric: metric 'segm' but the "
                           'predictions have no masks')
        cache: dict = {}
        for metric in self.metrics:
            logger.info(f'Evaluating {metric}...')
            timings: dict = {}
            out = evaluate_lvis(
                gt, dets, metric, max_dets=self.max_dets, timings=timings,
                cache=cache)
            self.last_results[metric] = out['results']
            self.last_timings[metric] = timings
            items = self.metric_items or [
                'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
                'APf'
            ]
            if self.classwise:
                self._log_classwise(out['precision'], gt, eval_results,
                                    logger)
            for k, v in out['results'].items():
                if k in items:
                    eval_results[f'{metric}_{k}'] = float(f'{float(v):.3f}')
            logger.info(_results_table(metric, out['results']) +
                        f'\n{metric} evaluation: {timings}')
        return eval_results

    def _log_classwise(self, precisions, gt, eval_results, logger):
        from terminaltables import AsciiTable
        per_cat = []
        for idx, cat_id in enumerate(gt.cat_ids.tolist()):
            precision = precisions[:, :, idx, 0]
            precision = precision[precision > -1]
            ap = float(np.mean(precision)) if precision.size else float('nan')
            name = gt.cat_names[cat_id]
            per_cat.append((name, f'{ap:0.3f}'))
            eval_results[f'{name}_precision'] = round(ap, 3)
        num_columns = min(6, len(per_cat) * 2)
        flat = list(itertools.chain(*per_cat))
        headers = ['category', 'AP'] * (num_columns // 2)
        rows = itertools.zip_longest(
            *[flat[i::num_columns] for i in range(num_columns)])
        logger.info('\n' + AsciiTable([headers] + list(rows)).table)

    def results2json(self, dets: LVISDetections, gt: LVISGroundTruth,
                     outfile_prefix: str) -> Dict[str, str]:
        """mmdet's result files, written as a stream."""
        files = {}
        cat_of_label = np.array(gt.file_cat_ids, np.int64)
        for metric in ('bbox', 'segm'):
            if metric == 'segm' and 'segm' not in self.metrics:
                continue
            path = f'{outfile_prefix}.{metric}.json'
            with open(path, 'w', encoding='utf-8') as f:
                f.write('[')
                first = True
                for rec in dets.records:
                    has_masks = rec.get('mask_offsets') is not None
                    if metric == 'segm' and not has_masks:
                        continue
                    scores = rec.get('mask_scores') if metric == 'segm' \
                        else None
                    if scores is None:
                        scores = rec['scores']
                    size = list(rec.get('mask_size', ()))
                    for i, box in enumerate(np.asarray(rec['bboxes'],
                                                       np.float32).tolist()):
                        entry = dict(
                            image_id=rec['img_id'],
                            bbox=[box[0], box[1], box[2] - box[0],
                                  box[3] - box[1]],
                            score=float(scores[i]),
                            category_id=int(
                                cat_of_label[int(rec['labels'][i])]))
                        if metric == 'segm':
                            off = rec['mask_offsets']
                            entry['segmentation'] = dict(
                                size=size,
                                counts=rec['mask_rles'][off[i]:off[i + 1]]
                                .decode())
                        f.write(('' if first else ', ') + json.dumps(entry))
                        first = False
                f.write(']')
            files[metric] = path
        return files


def _mask_size(masks, sample) -> Tuple[int, int]:
    if isinstance(masks, (list, tuple)):
        if masks:
            return tuple(masks[0]['size'])
        return tuple(sample['ori_shape'][:2])
    return tuple(masks.shape[-2:])


def _results_table(metric: str, results: Dict[str, float]) -> str:
    lines = [f'LVIS {metric} (lvis-api definitions, max_dets {MAX_DETS}):']
    for key, value in results.items():
        lines.append(f'  {key:<8} {value:.3f}')
    return '\n'.join(lines)

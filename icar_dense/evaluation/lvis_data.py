# Copyright (c) icar_dense contributors. All rights reserved.
"""LVIS annotations and per-image predictions as flat arrays, and
lvis-api's evaluation parameters.

:class:`LVISGroundTruth` reads an LVIS annotation file into arrays (no
per-annotation dicts); :class:`LVISDetections` concatenates the per-image
records of ``FastLVISMetric.process``.  Both index images and categories by
their position among the sorted ids, the order lvis-api evaluates them in.
"""
import json
import math
from typing import Dict, Optional, Sequence

import numpy as np
from mmengine.fileio import get_local_path

from .lvis_rle import _ann_rle

__all__ = [
    'LVISGroundTruth', 'LVISDetections', 'IOU_THRS', 'REC_THRS',
    'AREA_RANGES', 'AREA_LABELS', 'FREQ_LABELS', 'MAX_DETS', 'RESULT_KEYS'
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


def _to_numpy(value, dtype) -> np.ndarray:
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


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

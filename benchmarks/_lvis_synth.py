# Copyright (c) icar_dense contributors. All rights reserved.
"""A synthetic LVIS-v1-val-shaped problem, generated cheaply and repeatably.

1203 categories (405 frequent, 461 common, 337 rare; ground truth drawn
mostly from the frequent ones), COCO-sized images, ~12 ground-truth objects
per image over ~4 annotated categories, 8 ``neg_category_ids`` per image,
sometimes one ``not_exhaustive`` category, and 300 detections per image:
35% near a ground-truth object (its category mostly), 15% elsewhere with an
annotated category, 15% with a listed-absent one and 35% with any category.
Ground-truth masks are 16-vertex polygons (as LVIS'); a detection's mask is
the ellipse inscribed in its box, written directly as RLE (per column, one
run) -- no image-sized array is ever built, except by :func:`dense_masks`.

Every image is drawn from its own seed, so any subset (a rank's shard, the
first N images) is generated alone and identically.  Only the first
:data:`POOL` images are drawn: image ``i`` (id ``i + 1``) repeats the
content of image ``i % POOL`` under its own id.  Generating 19,809 distinct
images took 235 s of a 548 s benchmark on a 2-core AMD EPYC; the metric's
work per image (matching, IoUs, mask RLEs) is the same for a repeated image
as for a new one -- nothing is shared between images -- so the evaluation
at full size costs what it would with distinct images.
"""
import functools
from typing import List, Tuple

import numpy as np

NUM_CATS = 1203
FREQ_COUNTS = (('f', 405), ('c', 461), ('r', 337))
SIZES = ((480, 640), (640, 480), (427, 640), (640, 427), (480, 640),
         (375, 500), (500, 375), (512, 640))
DETS_PER_IMAGE = 300
NEG_PER_IMAGE = 8
# distinct images drawn (a multiple of the 256-image prediction chunks)
POOL = 2048


def categories(seed: int = 0) -> List[dict]:
    rng = np.random.default_rng([seed, 1 << 30])
    freqs = np.array(sum([[f] * n for f, n in FREQ_COUNTS], []))
    freqs = freqs[rng.permutation(NUM_CATS)]
    return [
        dict(id=i + 1, name=f'synthetic_{i + 1:04d}', frequency=str(f),
             synonyms=[], def_='synthetic') for i, f in enumerate(freqs)
    ]


def _cat_weights(cats: List[dict]) -> np.ndarray:
    w = np.array([{'f': 10.0, 'c': 2.0, 'r': 0.3}[c['frequency']]
                  for c in cats])
    return w / w.sum()


def _polygons(boxes: np.ndarray, vertices: int = 16) -> np.ndarray:
    """``(N, 2 * vertices)`` polygons of the ellipses inscribed in boxes."""
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    poly = np.empty((len(boxes), 2 * vertices))
    poly[:, 0::2] = cx[:, None] + rx[:, None] * np.cos(t)
    poly[:, 1::2] = cy[:, None] + ry[:, None] * np.sin(t)
    return poly.round(2)


def _random_boxes(rng, num: int, height: int, width: int) -> np.ndarray:
    """Boxes of log-uniform size (8 px to 70% of the short side)."""
    side = np.exp(rng.uniform(np.log(8), np.log(0.7 * min(height, width)),
                              num))
    aspect = np.exp(rng.uniform(-0.7, 0.7, num))
    w = np.minimum(side * aspect, width - 1)
    h = np.minimum(side / aspect, height - 1)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.stack([x, y, x + w, y + h], 1)


def image(index: int,
          cats: List[dict],
          seed: int = 0,
          with_anns: bool = True,
          with_preds: bool = True):
    """Annotations and predictions of image ``index``.

    Returns:
        tuple: ``img`` (LVIS image dict), ``anns`` (annotation dicts without
        ``id``) and ``pred`` (``bboxes`` float32, ``scores`` float32,
        ``labels`` int64, ``height``, ``width``).
    """
    src = index % POOL  # the drawn image this one repeats
    rng = np.random.default_rng([seed, src])
    height, width = SIZES[src % len(SIZES)]
    img_id = index + 1
    num_gt = 1 + int(rng.poisson(11))
    weights = _cat_weights(cats)
    num_pos = min(num_gt, 1 + int(rng.poisson(3)))
    pos = rng.choice(NUM_CATS, size=num_pos, replace=False, p=weights)
    others = np.setdiff1d(np.arange(NUM_CATS), pos)
    neg = rng.choice(others, size=NEG_PER_IMAGE, replace=False)
    nel = pos[:1] if rng.random() < 0.3 else pos[:0]
    gt_boxes = _random_boxes(rng, num_gt, height, width)
    gt_cat = pos[rng.integers(0, num_pos, num_gt)]
    anns = []
    if with_anns:
        polys = _polygons(gt_boxes)
        xs, ys = polys[:, 0::2], polys[:, 1::2]
        area = 0.5 * np.abs((xs * np.roll(ys, 1, 1)).sum(1) -
                            (ys * np.roll(xs, 1, 1)).sum(1))
        x1, y1 = xs.min(1), ys.min(1)
        boxes = np.stack([x1, y1, xs.max(1) - x1, ys.max(1) - y1],
                         1).round(2)
        for poly, box, a, cat in zip(polys.tolist(), boxes.tolist(),
                                     area.round(2).tolist(),
                                     (gt_cat + 1).tolist()):
            anns.append(
                dict(image_id=img_id, category_id=cat, bbox=box, area=a,
                     segmentation=[poly]))
    img = dict(id=img_id, height=height, width=width,
               file_name=f'{img_id:012d}.jpg',
               neg_category_ids=[int(c) + 1 for c in neg],
               not_exhaustive_category_ids=[int(c) + 1 for c in nel])
    if not with_preds:
        return img, anns, None

    n = DETS_PER_IMAGE
    kind = rng.random(n)
    near = kind < 0.35
    boxes = _random_boxes(rng, n, height, width)
    g = rng.integers(0, num_gt, n)
    size = gt_boxes[g, 2:] - gt_boxes[g, :2]
    jitter = gt_boxes[g] + rng.normal(0, 0.1, (n, 4)) * np.tile(size, 2)
    boxes[near] = jitter[near]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    boxes[:, 2] = np.minimum(boxes[:, 2], width)
    boxes[:, 3] = np.minimum(boxes[:, 3], height)
    labels = rng.integers(0, NUM_CATS, n)  # any category
    swap = rng.random(n)
    labels[near] = np.where(swap[near] < 0.8, gt_cat[g[near]],
                            np.where(swap[near] < 0.9,
                                     pos[rng.integers(0, num_pos, n)][near],
                                     neg[rng.integers(0, len(neg), n)][near]))
    mid = (kind >= 0.35) & (kind < 0.5)
    labels[mid] = pos[rng.integers(0, num_pos, n)][mid]
    low = (kind >= 0.5) & (kind < 0.65)
    labels[low] = neg[rng.integers(0, len(neg), n)][low]
    scores = np.where(near, 0.3 + 0.7 * rng.random(n), 0.6 * rng.random(n))
    pred = dict(
        bboxes=boxes.astype(np.float32),
        scores=scores.astype(np.float32),
        labels=labels.astype(np.int64),
        height=height,
        width=width)
    return img, anns, pred


def _image_gt(index: int, cats: List[dict], seed: int):
    return image(index, cats, seed, with_preds=False)[:2]


def dataset(num_images: int, seed: int = 0, procs: int = 0) -> dict:
    """The LVIS annotation dict of the first ``num_images`` images
    (``procs`` > 1: drawn by that many processes, the same dict); images
    beyond :data:`POOL` are copies of the drawn ones under their own ids."""
    cats = categories(seed)
    draw = functools.partial(_image_gt, cats=cats, seed=seed)
    drawn_num = min(num_images, POOL)
    if procs > 1:
        import multiprocessing as mp
        with mp.get_context('fork').Pool(procs) as pool:
            drawn = pool.map(draw, range(drawn_num), chunksize=256)
    else:
        drawn = list(map(draw, range(drawn_num)))
    images, anns = [], []
    for index in range(num_images):
        img, a = drawn[index % POOL]
        img_id = index + 1
        images.append(dict(img, id=img_id, file_name=f'{img_id:012d}.jpg'))
        anns.extend(dict(ann, image_id=img_id) for ann in a)
    for k, ann in enumerate(anns):
        ann['id'] = k + 1
    return dict(images=images, annotations=anns, categories=cats,
                info=dict(description='synthetic LVIS-v1-val-shaped problem'))


def ellipse_runs(boxes: np.ndarray, height: int,
                 width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Uncompressed RLE counts of the ellipses inscribed in ``boxes``.

    A pixel (column c, row r) is inside when its centre is; each column of
    an ellipse is one run, so the counts follow from the per-column row
    ranges (vectorised over all masks; empty columns are skipped and
    adjacent full-height columns merged, which gives pycocotools'
    canonical counts).  Returns all counts and the ``(N + 1, )`` offsets of
    each mask's.
    """
    b = np.asarray(boxes, np.float64)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    rx = np.maximum((b[:, 2] - b[:, 0]) / 2, 0.5)
    ry = np.maximum((b[:, 3] - b[:, 1]) / 2, 0.5)
    c0 = np.clip(np.floor(cx - rx).astype(np.int64), 0, width - 1)
    c1 = np.clip(np.ceil(cx + rx).astype(np.int64), 0, width - 1)
    ncols = c1 - c0 + 1
    mask_of = np.repeat(np.arange(len(b)), ncols)
    first = np.cumsum(ncols) - ncols
    col = np.arange(int(ncols.sum())) - np.repeat(first, ncols) + \
        np.repeat(c0, ncols)
    dx = (col + 0.5 - cx[mask_of]) / rx[mask_of]
    half = ry[mask_of] * np.sqrt(np.clip(1 - dx * dx, 0, None))
    r0 = np.ceil(cy[mask_of] - half - 0.5).astype(np.int64)
    r1 = np.floor(cy[mask_of] + half - 0.5).astype(np.int64)
    r0 = np.clip(r0, 0, height)
    r1 = np.clip(r1, -1, height - 1)
    length = r1 - r0 + 1
    ok = (np.abs(dx) <= 1) & (length > 0)
    mask_of, start, length = mask_of[ok], (col * height + r0)[ok], length[ok]
    # merge runs that touch (full-height columns side by side)
    touch = np.zeros(len(start), bool)
    same_mask = mask_of[1:] == mask_of[:-1]
    touch[1:] = same_mask & (start[1:] == start[:-1] + length[:-1])
    head = np.flatnonzero(~touch)
    end = np.maximum.reduceat(start + length, head) if len(head) else head
    mask_of, start = mask_of[head], start[head]
    length = end - start
    # counts per mask: zeros before each run, the run, final zeros if any
    first_run = np.ones(len(start), bool)
    first_run[1:] = mask_of[1:] != mask_of[:-1]
    prev_end = np.concatenate(([0], (start + length)[:-1]))
    zeros = np.where(first_run, start, start - prev_end)
    total = height * width
    runs_per_mask = np.bincount(mask_of, minlength=len(b))
    last = np.cumsum(runs_per_mask) - 1
    has = runs_per_mask > 0
    tail = np.zeros(len(b), np.int64)
    tail[has] = total - (start + length)[last[has]]
    tail[~has] = total  # an empty mask: one run of zeros
    ncounts = 2 * runs_per_mask + (tail > 0)
    offsets = np.zeros(len(b) + 1, np.int64)
    np.cumsum(ncounts, out=offsets[1:])
    counts = np.empty(int(offsets[-1]), np.int64)
    first_of_mask = np.cumsum(runs_per_mask) - runs_per_mask
    rank = np.arange(len(start)) - first_of_mask[mask_of]
    pos = offsets[:-1][mask_of] + 2 * rank
    counts[pos] = zeros
    counts[pos + 1] = length
    with_tail = np.flatnonzero(tail > 0)
    counts[offsets[1:][with_tail] - 1] = tail[with_tail]
    return counts, offsets


def mask_rles(pred: dict) -> List[dict]:
    """The detections' masks as compressed RLE dicts (mmdet's format)."""
    from icar_dense.evaluation.lvis_metric import compress_rle_counts
    h, w = pred['height'], pred['width']
    counts, offsets = ellipse_runs(pred['bboxes'], h, w)
    blob, boff = compress_rle_counts(counts, offsets)
    return [
        dict(size=[h, w], counts=blob[boff[i]:boff[i + 1]])
        for i in range(len(boff) - 1)
    ]


def dense_masks(pred: dict):
    """The same masks as an ``(N, H, W)`` bool tensor (what Mask R-CNN
    returns; expensive: for the mask-encoding measurement only)."""
    import pycocotools.mask as mask_utils
    import torch
    rles = mask_rles(pred)
    return torch.from_numpy(
        np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))
        .astype(bool))


def shard(num_images: int, rank: int, world: int) -> Tuple[int, ...]:
    """mmengine's DefaultSampler (no shuffle): rank r gets r, r + world, ..."""
    return tuple(range(rank, num_images, world))

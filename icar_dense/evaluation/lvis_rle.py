# Copyright (c) icar_dense contributors. All rights reserved.
"""Compressed RLE of instance masks, the bytes ``pycocotools.mask.encode``
writes, for :class:`~icar_dense.evaluation.lvis_metric.FastLVISMetric`.

``encode_mask_rles`` encodes only the masks it is asked for, each cropped to
the columns it occupies; the value changes of a crop are found along its
rows (no transposed copy) and put in column-major order for all masks at
once, which gives their full-image runs;
``compress_rle_counts`` is pycocotools' ``rleToString`` for many masks at
once, in numpy.
"""
from typing import List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_utils

__all__ = ['encode_mask_rles', 'compress_rle_counts']


def _ann_rle(segm, height: int, width: int) -> dict:
    """lvis-api's ``LVIS.ann_to_rle``: one compressed RLE."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm['counts'], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


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


def _transitions(crop: np.ndarray) -> np.ndarray:
    """Where the column-major pixels of ``crop`` (``(H, w)`` bool, rows
    contiguous) change value, counting a zero above and below every column:
    ``col * H + row`` of the first pixel after each change (``H`` for a
    column whose last pixel is set).  Found along the rows of the row-major
    array (no transposed copy); in row-major order, not sorted."""
    height, width = crop.shape
    # (a 1-d nonzero of the contiguous comparison: 2-d np.nonzero is ~5x
    # slower)
    rows, cols = np.divmod(np.flatnonzero(crop[1:] != crop[:-1]), width)
    return np.concatenate((cols * height + rows + 1,
                           np.flatnonzero(crop[0]) * height,
                           np.flatnonzero(crop[-1]) * height + height))


def _runs_of_transitions(parts: List[np.ndarray], total: int
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """Uncompressed RLE counts of many masks of ``total`` pixels from the
    transitions of each (:func:`_transitions` in image coordinates).

    A column ending with a set pixel and the next column starting with one
    give the same position twice: the run goes on, both are dropped.
    Returns the counts of all masks, concatenated, and their ``(N + 1, )``
    offsets, in pycocotools' convention (the first count is zeros; a mask
    ending with ones has no final zero count).
    """
    num = len(parts)
    sizes = np.fromiter((p.size for p in parts), np.int64, num)
    mask_of = np.repeat(np.arange(num, dtype=np.int64), sizes)
    keys = np.sort(mask_of * (total + 1) + np.concatenate(parts))
    if keys.size > 1:
        twice = keys[1:] == keys[:-1]
        drop = np.zeros(keys.size, bool)
        drop[1:] = twice
        drop[:-1] |= twice
        keys = keys[~drop]
    mask_of, pos = np.divmod(keys, total + 1)
    ntrans = np.bincount(mask_of, minlength=num)
    ends_with_one = np.zeros(num, bool)
    last = np.cumsum(ntrans) - 1
    has = ntrans > 0
    ends_with_one[has] = pos[last[has]] == total
    # counts: the transitions' gaps from 0 and up to ``total`` (not when the
    # mask ends with a set pixel)
    ncounts = ntrans + 1 - ends_with_one
    offsets = np.zeros(num + 1, np.int64)
    np.cumsum(ncounts, out=offsets[1:])
    ends = np.full(int(offsets[-1]), total, np.int64)
    first = np.cumsum(ntrans) - ntrans
    rank = np.arange(pos.size) - first[mask_of]
    ends[offsets[:-1][mask_of] + rank] = pos
    starts = np.empty_like(ends)
    starts[1:] = ends[:-1]
    starts[offsets[:-1]] = 0
    return ends - starts, offsets


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
        finds them) and its full-image runs are derived from the crop's
        value changes (``benchmarks/bench_lvis_eval.py`` times it).
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
    # per mask: where its column-major pixels change value, found in the
    # columns it occupies
    parts = []
    on_device = isinstance(masks, torch.Tensor) and \
        masks.device.type != 'cpu'
    if on_device:
        # only the occupied columns of each mask travel
        chosen = masks[torch.as_tensor(idx, device=masks.device)] != 0
        occupied = chosen.any(1).cpu().numpy()  # (n, W)
    else:
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().numpy()  # no copy
        masks = np.asarray(masks)
    for j, i in enumerate(idx.tolist()):
        if on_device:
            cols = occupied[j]
        else:
            mask = masks[i]
            if mask.dtype != bool:
                mask = mask != 0
            cols = mask.any(0)
        c0 = int(cols.argmax())
        if not cols[c0]:
            parts.append(np.zeros(0, np.int64))
            continue
        c1 = width - int(cols[::-1].argmax())
        crop = chosen[j, :, c0:c1].cpu().numpy() if on_device else \
            mask[:, c0:c1]
        parts.append(_transitions(crop) + c0 * height)
    counts, run_offsets = _runs_of_transitions(parts, height * width)
    blob, needed = compress_rle_counts(counts, run_offsets)
    lengths = np.zeros(num, np.int64)
    lengths[idx] = np.diff(needed)
    offsets = np.zeros(num + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return blob, offsets


def _pack(parts: List[bytes]) -> Tuple[bytes, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return b''.join(parts), offsets

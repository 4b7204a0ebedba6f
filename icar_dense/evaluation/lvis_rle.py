# Copyright (c) icar_dense contributors. All rights reserved.
"""Compressed RLE of instance masks, the bytes ``pycocotools.mask.encode``
writes, for :class:`~icar_dense.evaluation.lvis_metric.FastLVISMetric`.

``encode_mask_rles`` encodes only the masks it is asked for, each cropped to
the columns it occupies (its full-image runs are derived from the crop's);
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


def _crop_runs(flats: List[np.ndarray], leads: np.ndarray,
               trails: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Uncompressed RLE counts of many masks at once: mask ``i`` is
    ``leads[i]`` zeros, ``flats[i]`` (bool, not empty), ``trails[i]`` zeros.

    Returns the counts of all masks, concatenated, and their ``(N + 1, )``
    offsets, in pycocotools' convention (the first count is zeros; a mask
    ending with ones has no final zero count).  One pass of numpy over the
    concatenated pixels, not a few calls per mask.
    """
    sizes = np.fromiter((f.size for f in flats), np.int64, len(flats))
    starts = np.zeros(len(flats) + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    big = np.concatenate(flats)
    change = np.flatnonzero(big[1:] != big[:-1]) + 1
    bounds = np.union1d(change, starts)  # every run starts at one
    lengths = np.diff(bounds)
    mask_of = np.searchsorted(starts, bounds[:-1], side='right') - 1
    nruns = np.bincount(mask_of, minlength=len(flats))
    first_one = big[starts[:-1]].astype(np.int64)  # a 0 count goes first
    last_one = big[starts[1:] - 1] & (trails > 0)  # the trail is appended
    ends = np.zeros(len(flats) + 1, np.int64)
    np.cumsum(nruns + first_one + last_one, out=ends[1:])
    counts = np.zeros(int(ends[-1]), np.int64)
    run_first = np.cumsum(nruns) - nruns
    rank = np.arange(len(lengths)) - run_first[mask_of]
    counts[ends[:-1][mask_of] + first_one[mask_of] + rank] = lengths
    counts[ends[:-1]] += leads
    counts[ends[1:] - 1] += trails
    return counts, ends


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
    # per mask: the column-major pixels of its occupied columns (a
    # contiguous part of the image's column-major pixels), and the zeros
    # before and after them; an empty mask is one zero and then the rest
    flats, leads, trails = [], [], []
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
            flats.append(np.zeros(1, bool))
            leads.append(0)
            trails.append(height * width - 1)
            continue
        c1 = width - int(cols[::-1].argmax())
        if on_device:
            flats.append(
                chosen[j, :, c0:c1].t().contiguous().view(-1).cpu().numpy())
        else:
            flats.append(mask[:, c0:c1].T.ravel())
        leads.append(c0 * height)
        trails.append((width - c1) * height)
    counts, run_offsets = _crop_runs(flats, np.asarray(leads, np.int64),
                                     np.asarray(trails, np.int64))
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

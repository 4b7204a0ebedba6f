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

# Copyright (c) icar_dense contributors. All rights reserved.
"""Exact prediction paths for large vocabularies (detection and segmentation).

An open-vocabulary head can be given any number of classes at test time, and
two post-processing steps of mmdet / mmseg grow with that number far faster
than the classifier itself:

* **Detection** -- mmdet's ``multiclass_nms`` expands the class-agnostic boxes
  to ``N x C x 4``, thresholds all ``N x C`` scores and, beyond 10,000
  survivors, runs one NMS per class: at 21,841 classes and LVIS' score
  threshold of 1e-4 that is ~14,000 NMS calls, 25 s per 512 x 512 image on
  a 2-core CPU where the rest of Mask R-CNN takes 4 s.
  :func:`topk_multiclass_nms` returns the same detections from the ``K``
  highest scores only.  Hard NMS decides about a box from the boxes scored
  above it, so the decisions for the top-``K`` boxes are those of the full
  run; when at least ``max_num`` of them survive, the ``max_num`` best of the
  full run are among them.  Otherwise ``K`` grows (x4) until they do or all
  boxes above the threshold are in.
* **Segmentation** -- mmseg upsamples ``C`` logit maps to the image size
  (``C x H x W``: 1.3 GB at 1203 classes and 512 x 512, 23 GB at 21,841),
  averages the sliding windows in that size and takes the argmax.
  :func:`dense_argmax` returns the same argmax without materialising it: every
  step after the classifier (bilinear resizes, window sum / count, padding
  crop, flip) is linear, per channel, separable and has non-negative weights,
  so the logit of class ``c`` at output pixel ``p`` is
  ``sum_q A[p, q] L_c(q)`` over a few low-resolution positions ``q``.  A
  screening pass keeps the ``k`` best classes of every position ``q`` and an
  upper bound ``t(q)`` on all other classes there; per output tile, the
  union of the candidates of its positions is evaluated exactly (float32) and
  the winner is accepted where it beats ``sum_q A[p, q] t(q)``, which bounds
  every class that is nowhere a candidate.  The remaining pixels are
  evaluated over all classes.  For large vocabularies the screening may run
  in reduced precision (its bound then carries the worst-case rounding
  error): bfloat16 or int8 -- only where the device computes it faster
  than float32: :func:`screen_dtype_info` chooses bfloat16 on CUDA (with
  bf16 support) and, on the CPU, the fastest of float32, int8 and (CPUs
  with native AVX512-BF16 / AMX only) bfloat16 by a one-off probe.  On a
  CPU without native bfloat16 a bfloat16 matmul is emulated: measured 100x
  slower than float32 on an AVX2 AMD EPYC (0.5 vs 50 GFLOP/s); int8
  products are native wherever AVX2 is (1.3x float32 there, 2-3x with
  VNNI).

Both functions give the results of the dense computation up to float32
rounding (ties between classes whose values differ by ~1e-6 may break
differently); ``tests/benchmarks/test_benchmarks_smoke.py`` checks the
equivalence.

This module holds the segmentation screening and its bounds; the detection
NMS is :mod:`.large_vocab_nms`, the resize / window matrices of the
segmentation path :mod:`.resize_matrices` and the choice of the screening
dtype :mod:`.screen_dtype` (all exported here too).
"""
import math
import time
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .large_vocab_nms import _per_class_nms  # noqa: F401 (benchmark tests)
from .large_vocab_nms import topk_multiclass_nms
from .resize_matrices import chain_matrices, resize_matrix, window_grid
from .screen_dtype import (_int_mm, _quantise, cpu_bf16_flags,
                           resolve_screen_dtype, screen_dtype_info)

__all__ = [
    'topk_multiclass_nms', 'resize_matrix', 'screen_candidates',
    'dense_argmax', 'screen_dtype_info', 'cpu_bf16_flags', 'chain_matrices',
    'window_grid'
]

# ----------------------------------------------------------------------
# screening and the exact argmax
# ----------------------------------------------------------------------
# bfloat16 unit roundoff
_BF16_U = 2.0**-8
# screening adds this to the cosine before the bfloat16 output is rounded:
# every real class then scores > 0, padding classes -1, and the int16 view
# of a positive bfloat16 orders like its value
_SHIFT = 1.0 + 2.0**-6
# |screened - exact| in cosine units: inputs rounded to bfloat16 (2u + u^2,
# unit vectors), float32 accumulation over <= 1024 dims (< 1e-4), output
# rounding (u * (1 + shift)); rounded up
_BF16_MARGIN = 2 * _BF16_U + _BF16_U**2 + _BF16_U * (1 + _SHIFT) + 1e-4
# float32 screening vs the float32 re-evaluation: different summation order
_FP32_MARGIN = 1e-4
# int8 screening, beyond its rounding bound: the float32 re-evaluation
# (_FP32_MARGIN) and the float32 scaling of the integer products
_INT8_SLACK = _FP32_MARGIN + 1e-6


@torch.no_grad()
def screen_candidates(embeds: Tensor,
                      class_embeds: Tensor,
                      k: int,
                      use_bf16: bool,
                      block: int = 256,
                      group_size: int = 16,
                      groups: Optional[int] = None,
                      dtype: Optional[Union[str, torch.dtype]] = None
                      ) -> Tuple[Tensor, Tensor]:
    """The ``k`` best classes of every row and a bound on the others.

    Args:
        embeds (Tensor): ``(P, D)`` unit-norm visual embeddings.
        class_embeds (Tensor): ``(C, D)`` unit-norm class embeddings.
        k (int): Candidates per row.
        use_bf16 (bool): Reduced precision wanted (large vocabularies):
            screen in bfloat16 or int8 where the device does it faster
            than float32 (:func:`screen_dtype_info`), else in float32.  In
            bfloat16 and int8 the classes are screened in strided groups
            of ``group_size``: the
            best ``groups`` groups by their maximum are expanded, then the
            best ``k`` of their members kept.  float32 does the same from
            ``4 * group_size * k`` classes on (exact values, so only the
            margin of the summation order; measured 2x faster than a
            ``topk`` over 21,841 classes: the float32 screening then costs
            about what the bfloat16 one does on a CPU with AMX), a plain
            ``topk`` below.
        block (int): Rows per matrix product.  256: the (block, C)
            product stays closer to the caches than at 512 (measured
            1.2-1.5x faster screening at 21,841 classes, float32 and int8,
            one and two threads).
        dtype (str | torch.dtype, optional): Force the screening dtype
            (``bfloat16`` / ``int8`` / ``float32``) whatever ``use_bf16``
            says.

    Returns:
        tuple[Tensor, Tensor]: ``idx`` ``(P, k')`` candidate classes
        (``k' = min(k, C)``) and ``bound`` ``(P, )``: every other class has
        a cosine <= bound in the exact float32 product (-inf when all
        classes are candidates).
    """
    num, dim = embeds.shape
    num_classes = class_embeds.shape[0]
    device = embeds.device
    if num_classes <= k:
        idx = torch.arange(num_classes, device=device).expand(num, -1)
        return idx, embeds.new_full((num, ), -math.inf)
    size = group_size
    num_groups = -(-num_classes // size)
    groups = min(groups or k, num_groups - 1)
    dtype = resolve_screen_dtype(use_bf16, device, dtype)
    if dtype == torch.float32:
        if num_classes < 4 * size * k:
            # few classes: the groups would expand most of them
            return _screen_topk_float32(embeds, class_embeds, k, block)
        weights = class_embeds.new_zeros((num_groups * size, dim))
        weights[:num_classes] = class_embeds
        weights = weights.float().t().contiguous()

        def keys_of(rows):
            return rows.float() @ weights, lambda rest: rest + _FP32_MARGIN
    elif dtype == torch.int8:
        keys_of = _int8_keys(class_embeds, num_groups * size)
    else:
        weights = class_embeds.new_zeros((num_groups * size, dim + 1))
        weights[:num_classes, :dim] = class_embeds
        weights[:num_classes, dim] = _SHIFT
        weights[num_classes:, dim] = -1.0
        weights = weights.to(torch.bfloat16).t().contiguous()

        def bf16_bound(rest):
            return rest.view(torch.bfloat16).float() - _SHIFT + _BF16_MARGIN

        def keys_of(rows):
            rows = torch.cat([rows.float(), rows.new_ones((len(rows), 1))],
                             1)
            keys = (rows.to(torch.bfloat16) @ weights).view(torch.int16)
            return keys, bf16_bound

    # class c -> group c % num_groups, member c // num_groups
    members = torch.arange(size, device=device) * num_groups
    idx_out, bound_out = [], []
    for i in range(0, num, block):
        keys, to_bound = keys_of(embeds[i:i + block])
        gmax, gidx = keys.view(-1, size, num_groups).amax(1).topk(
            groups + 1, dim=1)
        cand = (gidx[:, :groups, None] + members).reshape(keys.shape[0], -1)
        cvals, cpos = keys.gather(1, cand).topk(k + 1, dim=1)
        idx_out.append(cand.gather(1, cpos[:, :k]))
        # beyond the candidates: the (k+1)-th candidate or the best member
        # of the groups not expanded
        bound_out.append(to_bound(torch.maximum(cvals[:, k],
                                                gmax[:, groups])))
    idx = torch.cat(idx_out)
    # padding classes (ids >= C; bfloat16: -1, float32 / int8: 0) can only be
    # picked when fewer than k real classes score above them; map them to
    # class 0 (a harmless duplicate: the bound still covers every class
    # left out)
    idx = torch.where(idx < num_classes, idx, torch.zeros_like(idx))
    return idx, torch.cat(bound_out)


def _int8_keys(class_embeds: Tensor, padded_classes: int):
    """The int8 screening: rows quantised per row, classes with one scale
    for all of them (so the integer products rank the classes of a row
    without conversion).  With ``f = a q_f + e_f`` and ``w = b q_w + e_w``
    (every ``|e| <= scale / 2`` per element),
    ``f.w - a b q_f.q_w = e_f.w + (a q_f).e_w``; Cauchy-Schwarz bounds it
    by ``|e_f| max|w| + |a q_f| max|e_w|`` with the norms of this very
    rounding, plus the float32 margins of the scaling and of the
    re-evaluation.  The integer product is exact (``dim * 127**2 < 2**31``
    up to 133,000 dims)."""
    num_classes, dim = class_embeds.shape
    if dim * 127 * 127 >= 2**31:
        raise ValueError(f'int8 screening: {dim} dims overflow int32')
    cls = class_embeds.float()
    cmax = float(cls.abs().max())
    cscale = cmax / 127.0 if cmax > 0 else 1.0
    qw = torch.round(cls / cscale).clamp_(-127, 127)
    w_norm = float(cls.norm(dim=1).max())
    ew_norm = float((cls - qw * cscale).norm(dim=1).max())
    weights = torch.zeros((padded_classes, dim + (-dim % 8)),
                          dtype=torch.int8, device=cls.device)
    weights[:num_classes, :dim] = qw.to(torch.int8)
    weights = weights.t().contiguous()

    def keys_of(rows):
        q, scale = _quantise(rows)
        rows = rows.float()
        qf = q[:, :dim].float() * scale
        margin = ((rows - qf).norm(dim=1) * w_norm +
                  qf.norm(dim=1) * ew_norm) * (1 + 1e-5) + _INT8_SLACK
        scale = scale.view(-1) * cscale

        def to_bound(rest):
            return rest.float() * scale + margin

        return _int_mm(q, weights), to_bound

    return keys_of


def _screen_topk_float32(embeds: Tensor, class_embeds: Tensor, k: int,
                         block: int) -> Tuple[Tensor, Tensor]:
    """float32 screening by a plain ``topk`` over all classes."""
    weights = class_embeds.float().t()
    idx_out, bound_out = [], []
    for i in range(0, embeds.shape[0], block):
        scores = embeds[i:i + block].float() @ weights
        vals, idx = scores.topk(k + 1, dim=1)
        idx_out.append(idx[:, :k])
        bound_out.append(vals[:, k] + _FP32_MARGIN)
    return torch.cat(idx_out), torch.cat(bound_out)


def _support(weights: Tensor) -> Tensor:
    return (weights != 0).any(0).nonzero(as_tuple=False).view(-1)


@torch.no_grad()
def dense_argmax(embeds: Tensor,
                 class_embeds: Tensor,
                 scale: float,
                 rows: Tensor,
                 cols: Tensor,
                 k: int = 8,
                 use_bf16: bool = False,
                 tile: int = 64,
                 stats: Optional[Dict[str, float]] = None,
                 screen_dtype: Optional[Union[str, torch.dtype]] = None
                 ) -> Tensor:
    """``argmax_c (rows @ L_c @ cols.T)`` with ``L = scale * embeds @ W.T``.

    Args:
        embeds (Tensor): ``(Hs, Ws, D)`` unit-norm pixel embeddings of the
            low-resolution grid (sliding windows stacked, see
            ``ICAREncoderDecoder``).
        class_embeds (Tensor): ``(C, D)`` unit-norm class embeddings.
        scale (float): ``1 / tau``.
        rows (Tensor): ``(Ho, Hs)`` non-negative weights of the output rows.
        cols (Tensor): ``(Wo, Ws)`` non-negative weights of the columns.
        k (int): Screening candidates per position (``1.5 k`` when the
            screening runs in int8, whose bound is looser).
        use_bf16 (bool): Reduced-precision screening wanted (large
            vocabularies): bfloat16 or int8 where the device does it
            faster, else float32 (:func:`screen_dtype_info`).  The result
            is exact either way.
        tile (int): Output tile size.
        stats (dict, optional): Filled with ``screen_s``, ``screen_dtype``
            (the one used), ``screen_k``, ``screen_gflop`` (the screening
            product: positions x classes x dims x 2), ``tiles_s``,
            ``fallback_pixels`` and ``mean_tile_candidates``.
        screen_dtype (str | torch.dtype, optional): Force the screening
            dtype (``bfloat16`` / ``int8`` / ``float32``).

    Returns:
        Tensor: ``(Ho, Wo)`` long class indices.
    """
    if bool((rows < 0).any()) or bool((cols < 0).any()):
        raise ValueError('dense_argmax needs non-negative interpolation '
                         'weights (bilinear); got negative ones')
    t0 = time.perf_counter()
    height, width, dim = embeds.shape
    class_embeds = class_embeds.float()
    flat = embeds.reshape(-1, dim).float()
    dtype = resolve_screen_dtype(use_bf16, embeds.device, screen_dtype)
    if dtype == torch.int8:
        # its rounding bound is ~1.3x bfloat16's (0.020 vs 0.016 in cosine
        # on unit vectors): half as many candidates again keep the pixels
        # whose winner cannot be certified rare (measured on a UperNet
        # Swin-T image at 21,841 classes, k 16 -> 24: 427 -> 13 fallback
        # pixels, the argmax 15 % faster)
        k = k + k // 2
    cand, bound = screen_candidates(flat, class_embeds, k, use_bf16,
                                    dtype=dtype)
    cand = cand.view(height, width, -1)
    bound = (bound * scale).view(height, width)
    t1 = time.perf_counter()
    out_h, out_w = rows.shape[0], cols.shape[0]
    pred = torch.empty((out_h, out_w), dtype=torch.long, device=embeds.device)
    fallback = 0
    cand_total = 0
    num_tiles = 0
    for y0 in range(0, out_h, tile):
        row_w = rows[y0:y0 + tile]
        rs = _support(row_w)
        row_w = row_w[:, rs]
        for x0 in range(0, out_w, tile):
            col_w = cols[x0:x0 + tile]
            cs = _support(col_w)
            col_w = col_w[:, cs]
            nr, nc = rs.numel(), cs.numel()
            if nr == 0 or nc == 0:
                raise ValueError('dense_argmax: an output pixel has no '
                                 'source position')
            sub = flat.view(height, width, dim)[rs][:, cs].reshape(-1, dim)
            classes = cand[rs][:, cs].reshape(-1).unique()
            logits = (sub @ class_embeds[classes].t()) * scale
            n = classes.numel()
            vals = torch.einsum('ycs,xc->yxs',
                                (row_w @ logits.view(nr, -1)).view(-1, nc, n),
                                col_w)
            best, arg = vals.max(-1)
            limit = row_w @ bound[rs][:, cs] @ col_w.t()
            labels = classes[arg]
            failed = ~(best > limit)
            if bool(failed.any()):
                # all classes, on the positions the failed pixels read
                fy, fx = failed.nonzero(as_tuple=True)
                fr = _support(row_w[fy])
                fc = _support(col_w[fx])
                fsub = sub.view(nr, nc, dim)[fr][:, fc].reshape(-1, dim)
                full = (fsub @ class_embeds.t()) * scale
                wts = (row_w[fy][:, fr, None] *
                       col_w[fx][:, None, fc]).reshape(fy.numel(), -1)
                labels[fy, fx] = (wts @ full).argmax(1)
                fallback += fy.numel()
            pred[y0:y0 + tile, x0:x0 + tile] = labels
            cand_total += n
            num_tiles += 1
    if stats is not None:
        stats.update(
            screen_s=t1 - t0,
            screen_dtype=str(dtype).replace('torch.', ''),
            screen_k=k,
            screen_gflop=2.0 * flat.shape[0] * class_embeds.shape[0] *
            dim / 1e9,
            tiles_s=time.perf_counter() - t1,
            fallback_pixels=fallback,
            mean_tile_candidates=cand_total / max(num_tiles, 1))
    return pred

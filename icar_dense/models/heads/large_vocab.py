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
  in bfloat16 (its bound then carries the worst-case rounding error) -- only
  where the device multiplies bfloat16 fast: :func:`screen_dtype_info`
  chooses it on CUDA (with bf16 support) and on CPUs with native bfloat16
  (AVX512-BF16 / AMX, confirmed by a one-off probe), and float32 elsewhere.
  On a CPU without them a bfloat16 matmul is emulated: measured 100x slower
  than float32 on an AVX2 AMD EPYC (0.5 vs 50 GFLOP/s).

Both functions give the results of the dense computation up to float32
rounding (ties between classes whose values differ by ~1e-6 may break
differently); ``tests/benchmarks/test_benchmarks_smoke.py`` checks the
equivalence.

This module holds the segmentation screening and the choice of its dtype;
the detection NMS is :mod:`.large_vocab_nms` and the resize / window
matrices of the segmentation path :mod:`.resize_matrices` (both exported
here too).  Size: ~420 lines, a tenth of them this explanation; the
screening and the choice of its dtype stay together because the screening's
bound depends on that dtype.
"""
import math
import os
import time
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .large_vocab_nms import _per_class_nms  # noqa: F401 (benchmark tests)
from .large_vocab_nms import topk_multiclass_nms
from .resize_matrices import chain_matrices, resize_matrix, window_grid

__all__ = [
    'topk_multiclass_nms', 'resize_matrix', 'screen_candidates',
    'dense_argmax', 'screen_dtype_info', 'cpu_bf16_flags', 'chain_matrices',
    'window_grid'
]

# ----------------------------------------------------------------------
# which dtype screens fast on this device
# ----------------------------------------------------------------------
# x86 flags of native bfloat16 arithmetic (Linux /proc/cpuinfo names); on
# ARM the 'bf16' feature
_NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'bf16')
_SCREEN_DTYPES = {'bfloat16': torch.bfloat16, 'float32': torch.float32}
_screen_cache: Dict[str, dict] = {}


def cpu_bf16_flags(cpuinfo: str = '/proc/cpuinfo') -> Optional[List[str]]:
    """The native-bfloat16 features the CPU lists (``[]``: none), or None
    when ``cpuinfo`` cannot be read (not Linux)."""
    try:
        with open(cpuinfo, encoding='utf-8', errors='replace') as f:
            for line in f:
                key = line.split(':', 1)[0].strip().lower()
                if key in ('flags', 'features'):
                    flags = set(line.split(':', 1)[1].split())
                    return [f for f in _NATIVE_BF16_FLAGS if f in flags]
    except OSError:
        return None
    return None


def _probe_seconds(dtype: torch.dtype, device: torch.device) -> float:
    """Best of 5 of a small screening-shaped matmul (34 MFLOP).

    On the CPU it runs on one thread: with more threads than idle cores
    (a shared machine), every multi-threaded call can wait a scheduler
    tick for a descheduled thread (measured: 16 ms for either dtype on a
    loaded 2-core AMD EPYC, against 0.1 / 0.35 ms single-threaded), and
    the comparison would measure the load, not the arithmetic.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 65, generator=g).to(device, dtype)
    b = torch.randn(65, 1024, generator=g).to(device, dtype)
    threads = torch.get_num_threads()
    if device.type == 'cpu':
        torch.set_num_threads(1)
    try:
        best = math.inf
        for _ in range(6):  # the first is a warm-up
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return best


def screen_dtype_info(device: Union[str, torch.device] = 'cpu',
                      cpuinfo: str = '/proc/cpuinfo') -> dict:
    """The dtype of the reduced-precision screening on ``device``.

    ``ICAR_SCREEN_DTYPE`` (``bfloat16`` / ``float32``) forces it.  Else,
    once per process and device type: CUDA -> bfloat16 where the GPU
    supports it; CPU -> float32 unless the CPU lists native bfloat16
    (``avx512_bf16`` / ``amx_bf16``, ARM ``bf16``) and a probe matmul then
    runs faster in bfloat16 than in float32 (also the rule where the flags
    cannot be read); other devices -> float32.

    Returns:
        dict: ``dtype`` (torch.dtype), ``name`` and ``reason``.
    """
    forced = os.environ.get('ICAR_SCREEN_DTYPE', 'auto').strip().lower()
    if forced not in ('auto', '', *_SCREEN_DTYPES):
        raise ValueError(f'ICAR_SCREEN_DTYPE={forced!r}: bfloat16, float32 '
                         'or auto')
    if forced in _SCREEN_DTYPES:
        return dict(dtype=_SCREEN_DTYPES[forced], name=forced,
                    reason='ICAR_SCREEN_DTYPE')
    device = torch.device(device)
    key = device.type
    if key in _screen_cache:
        return _screen_cache[key]
    if key == 'cuda':
        fast = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if fast else torch.float32
        reason = ('CUDA with bfloat16 support' if fast else
                  'CUDA without bfloat16 support')
    elif key == 'cpu':
        flags = cpu_bf16_flags(cpuinfo)
        if flags == []:
            dtype = torch.float32
            reason = ('CPU without native bfloat16 (no avx512_bf16 / '
                      'amx_bf16): bfloat16 matmuls are emulated, ~100x '
                      'slower than float32')
        else:
            t32 = _probe_seconds(torch.float32, device)
            t16 = _probe_seconds(torch.bfloat16, device)
            fast = t16 < 0.8 * t32
            dtype = torch.bfloat16 if fast else torch.float32
            reason = (f'CPU flags {flags if flags else "unreadable"}; probe '
                      f'matmul (1 thread) bfloat16 {t16 * 1e3:.2f} ms vs '
                      f'float32 {t32 * 1e3:.2f} ms')
    else:
        dtype, reason = torch.float32, f'{key}: float32 by default'
    info = dict(dtype=dtype, name=str(dtype).replace('torch.', ''),
                reason=reason)
    _screen_cache[key] = info
    return info


def resolve_screen_dtype(
        use_bf16: bool, device,
        dtype: Optional[Union[str, torch.dtype]]) -> torch.dtype:
    """``dtype`` when given (a name or a dtype); else float32 without
    ``use_bf16`` and what :func:`screen_dtype_info` finds fast with it."""
    if dtype is not None:
        if isinstance(dtype, str):
            if dtype not in _SCREEN_DTYPES:
                raise ValueError(f'screen dtype {dtype!r}: bfloat16 or '
                                 'float32')
            dtype = _SCREEN_DTYPES[dtype]
        if dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f'screen dtype {dtype}: bfloat16 or float32')
        return dtype
    if not use_bf16:
        return torch.float32
    return screen_dtype_info(device)['dtype']


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


@torch.no_grad()
def screen_candidates(embeds: Tensor,
                      class_embeds: Tensor,
                      k: int,
                      use_bf16: bool,
                      block: int = 512,
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
            screen in bfloat16 where the device does it fast
            (:func:`screen_dtype_info`), else in float32.  In bfloat16 the
            classes are screened in strided groups of ``group_size``: the
            best ``groups`` groups by their maximum are expanded, then the
            best ``k`` of their members kept.  float32 does the same from
            ``4 * group_size * k`` classes on (exact values, so only the
            margin of the summation order; measured 2x faster than a
            ``topk`` over 21,841 classes: the float32 screening then costs
            about what the bfloat16 one does on a CPU with AMX), a plain
            ``topk`` below.
        block (int): Rows per matrix product.
        dtype (str | torch.dtype, optional): Force the screening dtype
            (``bfloat16`` / ``float32``) whatever ``use_bf16`` says.

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
    if resolve_screen_dtype(use_bf16, device, dtype) == torch.float32:
        if num_classes < 4 * size * k:
            # few classes: the groups would expand most of them
            return _screen_topk_float32(embeds, class_embeds, k, block)
        weights = class_embeds.new_zeros((num_groups * size, dim))
        weights[:num_classes] = class_embeds
        weights = weights.float().t().contiguous()

        def keys_of(rows):
            return rows.float() @ weights

        def to_cosine(keys):
            return keys

        margin = _FP32_MARGIN
    else:
        weights = class_embeds.new_zeros((num_groups * size, dim + 1))
        weights[:num_classes, :dim] = class_embeds
        weights[:num_classes, dim] = _SHIFT
        weights[num_classes:, dim] = -1.0
        weights = weights.to(torch.bfloat16).t().contiguous()

        def keys_of(rows):
            rows = torch.cat([rows.float(), rows.new_ones((len(rows), 1))],
                             1)
            return (rows.to(torch.bfloat16) @ weights).view(torch.int16)

        def to_cosine(keys):
            return keys.view(torch.bfloat16).float() - _SHIFT

        margin = _BF16_MARGIN
    # class c -> group c % num_groups, member c // num_groups
    members = torch.arange(size, device=device) * num_groups
    idx_out, bound_out = [], []
    for i in range(0, num, block):
        keys = keys_of(embeds[i:i + block])
        gmax, gidx = keys.view(-1, size, num_groups).amax(1).topk(
            groups + 1, dim=1)
        cand = (gidx[:, :groups, None] + members).reshape(keys.shape[0], -1)
        cvals, cpos = keys.gather(1, cand).topk(k + 1, dim=1)
        idx_out.append(cand.gather(1, cpos[:, :k]))
        # beyond the candidates: the (k+1)-th candidate or the best member
        # of the groups not expanded
        rest = to_cosine(torch.maximum(cvals[:, k], gmax[:, groups]))
        bound_out.append(rest + margin)
    idx = torch.cat(idx_out)
    # padding classes (ids >= C; bfloat16: -1, float32: 0) can only be
    # picked when fewer than k real classes score above them; map them to
    # class 0 (a harmless duplicate: the bound still covers every class
    # left out)
    idx = torch.where(idx < num_classes, idx, torch.zeros_like(idx))
    return idx, torch.cat(bound_out)


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
        k (int): Screening candidates per position.
        use_bf16 (bool): Reduced-precision screening wanted (large
            vocabularies): bfloat16 where the device does it fast, else
            float32 (:func:`screen_dtype_info`).  The result is exact
            either way.
        tile (int): Output tile size.
        stats (dict, optional): Filled with ``screen_s``, ``screen_dtype``
            (the one used), ``screen_k``, ``screen_gflop`` (the screening
            product: positions x classes x dims x 2), ``tiles_s``,
            ``fallback_pixels`` and ``mean_tile_candidates``.
        screen_dtype (str | torch.dtype, optional): Force the screening
            dtype (``bfloat16`` / ``float32``).

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

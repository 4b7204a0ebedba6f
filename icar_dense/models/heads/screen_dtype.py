# Copyright (c) icar_dense contributors. All rights reserved.
"""Which dtype the large-vocabulary screening runs in on this device.

The screening of :func:`~.large_vocab.dense_argmax` is one
``(positions x dims) @ (dims x classes)`` product: 183 GFLOP for a 512 x 512
image at 21,841 classes, most of the large-vocabulary cost.  Its result is
exact in any dtype (the bound carries the rounding), so the dtype is chosen
for speed alone: bfloat16 on CUDA with bf16 support; on the CPU the fastest
of float32, int8 (a per-row-scaled integer product, native wherever
AVX2 is; 1.3x float32 with AVX2, 2-3x with VNNI) and -- where the CPU
lists native bfloat16 -- bfloat16, by a probe matmul once per process.
A CPU without native bfloat16 emulates it ~100x slower than float32
(AVX2 AMD EPYC), so it is never tried there.  ``ICAR_SCREEN_DTYPE``
forces a dtype.
"""
import math
import os
import time
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ['screen_dtype_info', 'resolve_screen_dtype', 'cpu_bf16_flags']

# x86 flags of native bfloat16 arithmetic (Linux /proc/cpuinfo names); on
# ARM the 'bf16' feature
_NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'bf16')
_SCREEN_DTYPES = {
    'bfloat16': torch.bfloat16,
    'int8': torch.int8,
    'float32': torch.float32
}
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


def _probe_seconds(dtype: torch.dtype, device: torch.device,
                   threads: int = 1) -> float:
    """Best of 5 of a small screening-shaped matmul (1.07 GFLOP) on
    ``threads`` CPU threads.

    8192 columns: the product's output outgrows the first cache levels as
    the screening's does (Intel Xeon capped at AVX2: int8 measured 0.85x
    float32 with 1024 columns, 0.77x with 4096 and in the real screening
    of 21,841 classes).  :func:`screen_dtype_info` times it on one thread
    -- with more threads than idle cores (a shared machine), every
    multi-threaded call can wait a scheduler tick for a descheduled thread
    (measured: 16 ms for either dtype on a loaded 2-core AMD EPYC, against
    0.1 / 0.35 ms single-threaded), and the comparison would measure the
    load, not the arithmetic -- and on the screening's own thread count,
    where the dtypes scale differently (AMD EPYC Zen 4 capped at AVX2,
    int8 / float32: 0.93 on one thread, 0.66 on two with 8192 columns,
    0.80 with 4096, 0.59 in the real two-thread screening).  int8 is timed
    as the screening runs it: the rows quantised, then the integer product.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=g).to(device)
    b = torch.randn(256, 8192, generator=g).to(device)
    if dtype == torch.int8:
        qb = _quantise(b.t())[0].t()

        def run():
            return _int_mm(_quantise(a)[0], qb)
    else:
        a, b = a.to(dtype), b.to(dtype)

        def run():
            return a @ b
    saved = torch.get_num_threads()
    if device.type == 'cpu':
        torch.set_num_threads(threads)
    try:
        best = math.inf
        for _ in range(6):  # the first is a warm-up
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    return best


def screen_dtype_info(device: Union[str, torch.device] = 'cpu',
                      cpuinfo: str = '/proc/cpuinfo') -> dict:
    """The dtype of the reduced-precision screening on ``device``.

    ``ICAR_SCREEN_DTYPE`` (``bfloat16`` / ``int8`` / ``float32``) forces
    it.  Else, once per process and device type: CUDA -> bfloat16 where
    the GPU supports it; CPU -> the fastest of a probe matmul in float32,
    int8 and -- only where the CPU lists native bfloat16 (``avx512_bf16``
    / ``amx_bf16``, ARM ``bf16``) or the flags cannot be read -- bfloat16,
    when it beats float32 by 20 %; float32 otherwise (and on other
    devices).  A CPU without native bfloat16 emulates it ~100x slower than
    float32 (AVX2 AMD EPYC); int8 products are native on every x86-64 CPU
    with AVX2 (with the instruction set capped at AVX2: the screening of
    21,841 classes 0.92 s in int8 vs 1.19 s in float32; with VNNI or AMX
    2-3x faster than float32).

    Returns:
        dict: ``dtype`` (torch.dtype), ``name`` and ``reason``.
    """
    forced = os.environ.get('ICAR_SCREEN_DTYPE', 'auto').strip().lower()
    if forced not in ('auto', '', *_SCREEN_DTYPES):
        raise ValueError(f'ICAR_SCREEN_DTYPE={forced!r}: bfloat16, int8, '
                         'float32 or auto')
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
        tried = [torch.float32, torch.int8]
        if flags != []:
            tried.append(torch.bfloat16)
        # each dtype's time over float32's, the better of one thread and
        # the screening's threads (a dtype clearly slower on one thread is
        # not timed again)
        ratios: Dict[torch.dtype, float] = {}
        timed = []
        for threads in sorted({1, torch.get_num_threads()}):
            seconds = {dt: _probe_seconds(dt, device, threads)
                       for dt in tried if ratios.get(dt, 0) < 2}
            for dt, t in seconds.items():
                ratios[dt] = min(ratios.get(dt, math.inf),
                                 t / seconds[torch.float32])
            timed.append(f'{threads} thread{"s" if threads > 1 else ""}: ' +
                         ', '.join(f'{_name(dt)} {t * 1e3:.2f} ms'
                                   for dt, t in seconds.items()))
        dtype = min(ratios, key=ratios.get)
        if ratios[dtype] >= 0.8:
            dtype = torch.float32
        timed = '; '.join(timed)
        if flags == []:
            flag_text = ('no native bfloat16 (avx512_bf16 / amx_bf16): '
                         'bfloat16 not tried (emulated, ~100x slower than '
                         'float32)')
        else:
            flag_text = f'CPU flags {flags if flags else "unreadable"}'
        reason = f'{flag_text}; probe matmul ({timed})'
    else:
        dtype, reason = torch.float32, f'{key}: float32 by default'
    info = dict(dtype=dtype, name=_name(dtype), reason=reason)
    _screen_cache[key] = info
    return info


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace('torch.', '')


def resolve_screen_dtype(
        use_bf16: bool, device,
        dtype: Optional[Union[str, torch.dtype]]) -> torch.dtype:
    """``dtype`` when given (a name or a dtype); else float32 without
    ``use_bf16`` and what :func:`screen_dtype_info` finds fast with it."""
    if dtype is not None:
        if isinstance(dtype, str):
            if dtype not in _SCREEN_DTYPES:
                raise ValueError(f'screen dtype {dtype!r}: bfloat16, int8 '
                                 'or float32')
            dtype = _SCREEN_DTYPES[dtype]
        if dtype not in _SCREEN_DTYPES.values():
            raise ValueError(f'screen dtype {dtype}: bfloat16, int8 or '
                             'float32')
        return dtype
    if not use_bf16:
        return torch.float32
    return screen_dtype_info(device)['dtype']


def _quantise(rows: Tensor) -> Tuple[Tensor, Tensor]:
    """int8 values and float32 scales (per row) of ``rows``: ``rows ~=
    scale * q``, ``|q| <= 127``, the inner dim zero-padded to a multiple
    of 8 (what integer GEMM kernels take)."""
    rows = rows.float()
    scale = rows.abs().amax(1, keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / scale).clamp_(-127, 127)
    pad = -rows.shape[1] % 8
    if pad:
        q = torch.nn.functional.pad(q, (0, pad))
    return q.to(torch.int8), scale


def _int_mm(a: Tensor, b: Tensor) -> Tensor:
    """int8 x int8 -> exact int32 product.  ``torch._int_mm`` takes more
    than 16 rows on CUDA (the last screening block may have fewer): short
    inputs get zero rows, cut from the result."""
    rows = a.shape[0]
    if rows <= 16:
        a = torch.nn.functional.pad(a, (0, 0, 0, 17 - rows))
        return torch._int_mm(a, b)[:rows]
    return torch._int_mm(a, b)

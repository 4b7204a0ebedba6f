"""Benchmark InMaP proxy learning (icar_dense.inmap.learn_vision_proxies).

Times the projected-gradient loop (and, separately, the pseudo-label and
prediction passes) for ``n`` features x ``C`` classes x ``d`` dims and prints
one JSON document. The reference size is the paper's setting scaled to this
package: n = 50,000, C = 1000, d = 256, 2000 iterations.

A full 2000-step run on a CPU is ~100 TFLOP (two ``n x d x C`` GEMMs per
step), i.e. many minutes on a small machine, so ``--iters`` measures fewer
steps; the JSON then reports the measured numbers and, labelled
separately, the extrapolation to 2000 steps (the steps cost the same: the
loop has no data-dependent work).

Examples::

    python benchmarks/bench_inmap.py --quick
    python benchmarks/bench_inmap.py --iters 20 --device cpu
    python benchmarks/bench_inmap.py --device cuda       # full 2000 steps

The module is loaded from its file when ``import icar_dense`` is not
possible (the package imports mmdet/mmseg/mmaction2; the core is pure
torch), so the benchmark also runs in a torch-only environment.
"""
import argparse
import importlib.util
import json
import os.path as osp
import platform
import resource
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _common import machine_info  # noqa: E402

REFERENCE_ITERS = 2000


def _load_core():
    try:
        from icar_dense.inmap import core
        return core
    except ImportError:
        # torch only (no mmengine): the pure-torch inmap modules as a package
        # of their own, without running icar_dense/inmap/__init__.py
        package = types.ModuleType('_inmap')
        package.__path__ = [
            osp.join(
                osp.dirname(osp.dirname(osp.abspath(__file__))), 'icar_dense',
                'inmap')
        ]
        sys.modules['_inmap'] = package
        return importlib.import_module('_inmap.core')


def make_problem(n, num_classes, dim, device, seed=0):
    """Clustered unit features and shifted text proxies (the timing does not
    depend on the values, but realistic data keeps the softmax honest)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    labels = torch.randint(num_classes, (n, ), generator=g)
    feats = F.normalize(
        centres[labels] + 0.5 * torch.randn(n, dim, generator=g) / dim**0.5,
        dim=1)
    text = F.normalize(
        centres + 0.3 * F.normalize(torch.randn(dim, generator=g), dim=0),
        dim=1).t().contiguous()
    return feats.to(device), text.to(device)


def bench_device(core, device, args):
    feats, text = make_problem(args.n, args.classes, args.dim, device)
    kwargs = dict(
        variants=tuple(args.variants),
        progress=False,
        chunk_size=args.chunk_size)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)

    # Warm-up: BLAS/cuBLAS handles, allocator, lazy kernel loading, on the
    # first --warmup-n features (the full problem's pseudo-labelling pass
    # alone takes 16-20 s on 2 CPU cores). Its per-step time, scaled to n,
    # also decides how many repeats fit in the budget.
    warm_n = min(args.warmup_n or args.n, args.n)
    t0 = time.perf_counter()
    warm = core.learn_vision_proxies(
        feats[:warm_n], text, iters=args.warmup_iters, **kwargs)
    warm_seconds = time.perf_counter() - t0
    scale = args.n / warm_n
    est_per_iter = warm.timings['learn'] / max(args.warmup_iters, 1) * scale
    est_run = (warm.timings['pseudo_labels'] + est_per_iter * args.iters) \
        * scale
    repeats = args.repeats
    if est_run * repeats > args.max_seconds:
        repeats = max(1, int(args.max_seconds // max(est_run, 1e-9)))

    runs = []
    for _ in range(repeats):
        res = core.learn_vision_proxies(
            feats, text, iters=args.iters, **kwargs)
        runs.append(res.timings)
    learn = statistics.median(r['learn'] for r in runs)
    labels = statistics.median(r['pseudo_labels'] for r in runs)
    predict = statistics.median(r['predict'] for r in runs)
    per_iter = learn / args.iters
    out = dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device)
                     if device.type == 'cuda' else platform.processor()
                     or platform.machine()),
        threads=torch.get_num_threads(),
        n=args.n,
        classes=args.classes,
        dim=args.dim,
        variants=list(args.variants),
        chunk_size=res.config['chunk_size'],
        warmup_iters=args.warmup_iters,
        warmup_n=warm_n,
        warmup_seconds=round(warm_seconds, 4),
        repeats=repeats,
        measured_iters=args.iters,
        # Median over repeats of the gradient-step loop alone.
        seconds_measured=round(learn, 4),
        seconds_per_iter=round(per_iter, 6),
        seconds_pseudo_labels=round(labels, 4),
        seconds_predict=round(predict, 4),
        all_runs_learn_seconds=[round(r['learn'], 4) for r in runs],
        gflop_per_iter=round(
            4.0 * args.n * args.dim * args.classes *
            len([v for v in args.variants if v != 'text']) / 1e9, 2),
    )
    if args.iters != REFERENCE_ITERS:
        # Labelled as an extrapolation: every step does the same work.
        out['seconds_2000_extrapolated'] = round(per_iter * REFERENCE_ITERS, 2)
        out['seconds_total_2000_extrapolated'] = round(
            per_iter * REFERENCE_ITERS + labels + predict, 2)
    else:
        out['seconds_total_2000'] = round(learn + labels + predict, 2)
    if device.type == 'cuda':
        out['peak_gpu_memory_mb'] = round(
            torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        # ru_maxrss is in KiB on Linux; whole process, incl. the features.
        out['peak_rss_mb'] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=50000, help='features')
    parser.add_argument('--classes', type=int, default=1000)
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument(
        '--iters',
        type=int,
        default=REFERENCE_ITERS,
        help='gradient steps to measure (extrapolated to '
        f'{REFERENCE_ITERS} when different)')
    parser.add_argument('--warmup-iters', type=int, default=3)
    parser.add_argument(
        '--warmup-n',
        type=int,
        default=5000,
        help='features of the warm-up run (0: all)')
    parser.add_argument(
        '--repeats',
        type=int,
        default=3,
        help='timed runs (median); fewer if they would '
        'exceed --max-seconds')
    parser.add_argument(
        '--max-seconds',
        type=float,
        default=600.0,
        help='time budget of the repeats per device')
    parser.add_argument(
        '--device',
        choices=['auto', 'cpu', 'cuda', 'all'],
        default='auto',
        help='auto/all: the CPU, plus the GPU if available')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument('--chunk-size', type=int, default=None)
    parser.add_argument(
        '--variants',
        nargs='+',
        default=['text', 'full'],
        help='variants to learn (default: the full method)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='small smoke run: n=5000, C=100, d=64, 20 iters')
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.classes, args.dim = 5000, 100, 64
        args.iters, args.warmup_iters, args.repeats = 20, 2, 3
    if args.iters < 1:
        parser.error('--iters must be >= 1')
    if args.warmup_n < 0:
        parser.error(f'--warmup-n must be >= 0 (0: all n), got '
                     f'{args.warmup_n}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    core = _load_core()
    devices = []
    if args.device in ('auto', 'all', 'cpu'):
        devices.append(torch.device('cpu'))
    if args.device in ('auto', 'all', 'cuda'):
        if torch.cuda.is_available():
            devices.append(torch.device('cuda'))
        elif args.device == 'cuda':
            sys.exit('--device cuda: CUDA is not available')
    results = [bench_device(core, device, args) for device in devices]
    print(
        json.dumps(
            dict(
                benchmark='inmap.learn_vision_proxies',
                torch=torch.__version__,
                quick=args.quick,
                reference_iters=REFERENCE_ITERS,
                results=results,
                machine=machine_info(
                    'cuda' if any(d.type == 'cuda' for d in devices)
                    else 'cpu'))))


if __name__ == '__main__':
    main()

# Copyright (c) icar_dense contributors. All rights reserved.
"""LVIS evaluation at LVIS v1 val size: FastLVISMetric vs mmdet's LVISMetric.

The synthetic LVIS-v1-val-shaped problem of ``_lvis_synth.py`` (1203
categories, 405 f / 461 c / 337 r, ~12 objects and 300 detections per image,
polygon ground-truth masks, ellipse detection masks) is evaluated by:

1. ``dist`` -- ``FastLVISMetric`` (``configs/det/*lvis*.py``) at full size
   (19,809 images, boxes and masks) by 2 ranks (gloo, CPU), one per core:
   each processes its shard and matches its own images, rank 0 gathers
   the match results and accumulates (``lvis_shards``); the full-size
   figure is rank 0's phases and the larger peak RSS of the two, and the
   rank-0 peak is reported apart.  ``--single-process`` also runs ``ours``, the
   full size in one process;
2. ``ours`` and ``mmdet`` -- ours and mmdet's ``LVISMetric`` (lvis-api) on the
   first ``--mmdet-images`` images, boxes only (mmdet's takes 74 s and
   3.2 GB at 2,000 images on a 2-core CPU; ~13 min and ~22 GB at full size,
   measured linear in the issue): times, peaks, their ratio and the
   difference of the metrics;
3. ``encode`` -- the per-image mask encoding of ``process`` on Mask R-CNN's
   output format (an ``(300, H, W)`` bool tensor): mmdet's
   ``encode_mask_results`` vs ours (the masks LVIS evaluates, cropped), on a
   sample of images, on one core while 2. runs on the other.

Each runs in a fresh process (``ru_maxrss`` is the peak of that process):
phases are the ground-truth load (``gt``), ``process`` (all images; the
synthetic predictions are generated once beforehand by helper processes into
``work_dirs/benchmarks/lvis_eval`` -- ~1.3 GB, ``--keep-data`` keeps them
-- and reading them is timed apart and excluded) and ``evaluate``
(``metric.evaluate``: gathering and ``compute_metrics``); each phase reports
its time and the peak RSS at its end.  In the full-size run the masks reach
``process`` already RLE-encoded (mmdet's format, what ``DumpDetResults``
pickles): building 19,809 x 300 image-sized masks is not affordable; the
cost of encoding them from Mask R-CNN's tensors is measured by ``encode``
and added, labelled, as an estimate.

    python benchmarks/bench_lvis_eval.py            # what `make bench` runs
    python benchmarks/bench_lvis_eval.py --quick    # smoke run (in-process
                                                    # workers but the ranks)
"""
import argparse
import json
import os
import os.path as osp
import socket
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import _common as C  # noqa: E402
import _lvis_cache as D  # noqa: E402
import _lvis_synth as S  # noqa: E402

SCRIPT = osp.abspath(__file__)
FULL_IMAGES = 19809
GOAL_S = 300.0
GOAL_MB = 8192.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=FULL_IMAGES,
                        help='images of the full-size run (boxes + masks)')
    parser.add_argument('--mmdet-images', type=int, default=2000,
                        help="images of the side-by-side run with mmdet's "
                        'LVISMetric (boxes; 0: skip)')
    parser.add_argument('--encode-images', type=int, default=30,
                        help='images of the mask-encoding measurement')
    parser.add_argument('--dist-ranks', type=int, default=2,
                        help='ranks of the multi-process run (0: skip)')
    parser.add_argument('--single-process', action='store_true',
                        help='also evaluate the full size in one process '
                        '(the full-size figure is the 2-rank run\'s)')
    parser.add_argument('--dist-images', type=int, default=None,
                        help='images of the multi-process run (default: '
                        '--images)')
    parser.add_argument('--gen-procs', type=int, default=2,
                        help='helper processes generating the synthetic '
                        'annotations and predictions')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--keep-data', action='store_true',
                        help='keep the generated predictions for a rerun')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--worker', default=None, help='internal')
    parser.add_argument('--ann-file', default=None, help='internal')
    parser.add_argument('--kinds', nargs='+', default=['bbox', 'segm'],
                        help='internal')
    parser.add_argument('--rank', type=int, default=0, help='internal')
    parser.add_argument('--port', type=int, default=0, help='internal')
    parser.add_argument('--out', default=None, help='internal')
    args = parser.parse_args(argv)
    if args.quick:
        args.images = min(args.images, 40)
        args.mmdet_images = min(args.mmdet_images, 20)
        args.encode_images = min(args.encode_images, 2)
        args.gen_procs = 0
    if args.dist_images is None:
        args.dist_images = args.images
    return args


def peak_mb() -> float:
    return round(C.peak_rss_mb(), 1)


# ----------------------------------------------------------------------
# workers (one fresh process each)
# ----------------------------------------------------------------------
def _build_metric(args, kinds):
    import icar_dense  # noqa: F401  (registers; lvis on numpy 2)
    if args.worker == 'mmdet':
        from mmdet.evaluation import LVISMetric
        return LVISMetric(ann_file=args.ann_file, metric=list(kinds))
    from icar_dense.evaluation.lvis_metric import FastLVISMetric
    # the ranks' shared folder for the gathered records
    tag = f'port{args.port}' if args.worker == 'dist' else os.getpid()
    return FastLVISMetric(
        ann_file=args.ann_file, metric=list(kinds),
        collect_dir=osp.join(C.work_dir('lvis_eval'), f'collect_{tag}'))


def run_metric(args, indices, size, metric=None):
    """gt / process / evaluate phases of one metric; a dict of figures."""
    kinds = args.kinds
    with_masks = 'segm' in kinds
    # libraries first: their import is not part of the ground-truth load
    import icar_dense  # noqa: F401
    import mmdet.evaluation  # noqa: F401
    out = dict(images=len(indices), kinds=list(kinds),
               rss_start_mb=round(C.rss_mb(), 1))
    t0 = time.perf_counter()
    metric = metric or _build_metric(args, kinds)
    if hasattr(metric, 'gt'):
        metric.gt  # noqa: B018  (reads the annotation file)
    out['gt_s'] = round(time.perf_counter() - t0, 2)
    out['gt_peak_rss_mb'] = peak_mb()
    process_s = 0.0
    t_read = time.perf_counter()
    for index, pred in D.predictions(indices, args.seed):
        sample = D.data_sample(index, pred, with_masks)
        t = time.perf_counter()
        metric.process({}, [sample])
        process_s += time.perf_counter() - t
    out['process_s'] = round(process_s, 2)
    out['read_predictions_s'] = round(
        time.perf_counter() - t_read - process_s, 2)
    out['process_peak_rss_mb'] = peak_mb()
    out['rss_after_process_mb'] = round(C.rss_mb(), 1)
    t = time.perf_counter()
    metrics = metric.evaluate(size)
    out['evaluate_s'] = round(time.perf_counter() - t, 2)
    out['evaluate_peak_rss_mb'] = peak_mb()
    out['peak_rss_mb'] = out['evaluate_peak_rss_mb']
    out['total_s'] = round(out['gt_s'] + out['process_s'] +
                           out['evaluate_s'], 2)
    out['metrics'] = metrics
    if getattr(metric, 'last_timings', None):
        out['evaluate_steps'] = metric.last_timings
    return out


def worker_metric(args):
    indices = list(range(args.images))
    out = run_metric(args, indices, args.images)
    out.update(worker=args.worker)
    C.emit([out])


def worker_encode(args):
    """mmdet's encode_mask_results vs ours, per image of 300 masks."""
    import numpy as np
    import torch

    import icar_dense  # noqa: F401
    from icar_dense.evaluation.lvis_metric import (FastLVISMetric,
                                                   encode_mask_rles)
    from mmdet.structures.mask import encode_mask_results
    metric = FastLVISMetric(ann_file=args.ann_file, metric=['segm'])
    metric.gt  # noqa: B018  (read before timing: not part of the encoding)
    cats = S.categories(args.seed)
    # read_once: every needed mask read once (numpy ``any`` over its
    # rows), what any encoder of dense (300, H, W) masks must do at least
    times = dict(mmdet=[], ours=[], ours_all_masks=[], read_once=[])
    encoded = []
    equal = True
    for i in range(args.images):
        _, _, pred = S.image(i, cats, args.seed, with_anns=False)
        masks = S.dense_masks(pred)  # (300, H, W) bool, as Mask R-CNN's
        labels = pred['labels'].astype(np.int32)
        t = time.perf_counter()
        ref = encode_mask_results(masks.detach().cpu().numpy())
        times['mmdet'].append(time.perf_counter() - t)
        t = time.perf_counter()
        need = metric._needed_masks(i + 1, labels, pred['scores'])
        blob, offsets = encode_mask_rles(masks, need)
        times['ours'].append(time.perf_counter() - t)
        t = time.perf_counter()
        encode_mask_rles(masks, None)
        times['ours_all_masks'].append(time.perf_counter() - t)
        dense = masks.numpy()
        t = time.perf_counter()
        for k in np.flatnonzero(need).tolist():
            dense[k].any(0)
        times['read_once'].append(time.perf_counter() - t)
        encoded.append(int(need.sum()))
        for k in np.flatnonzero(need).tolist():
            equal &= blob[offsets[k]:offsets[k + 1]] == ref[k]['counts']
        del masks
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    mean = {k: round(sum(v) / len(v), 4) for k, v in times.items()}
    C.emit([
        dict(worker='encode', images=args.images,
             masks_per_image=S.DETS_PER_IMAGE,
             image_sizes=sorted({'x'.join(map(str, s))
                                 for s in S.SIZES[:args.images]}),
             mean_s_per_image=mean,
             runs_s={k: [round(t, 4) for t in v] for k, v in times.items()},
             mean_masks_encoded_by_ours=round(sum(encoded) / len(encoded),
                                              1),
             identical_rle=bool(equal),
             speedup=round(mean['mmdet'] / mean['ours'], 1),
             speedup_all_masks=round(mean['mmdet'] / mean['ours_all_masks'],
                                     1))
    ])


def worker_dist(args):
    """One rank of the multi-process run (gloo)."""
    import torch.distributed as dist

    # imported before the group exists, as in the tools: a module imported
    # after it can keep it alive past end_distributed (torch's fsdp takes
    # dist.group.WORLD as a default argument), and a group alive when
    # Python shuts down can abort the process
    from icar_dense.engine import end_distributed
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{args.port}', rank=args.rank,
        world_size=args.dist_ranks)
    indices = list(S.shard(args.images, args.rank, args.dist_ranks))
    out = run_metric(args, indices, args.images)
    end_distributed()
    out.update(worker='dist', rank=args.rank, world_size=args.dist_ranks)
    if args.rank != 0:
        out.pop('metrics', None)
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(out, f)


# ----------------------------------------------------------------------
# the parent
# ----------------------------------------------------------------------
def _worker_cmd(args, worker, images, ann, kinds, extra=()):
    return [
        '--worker', worker, '--images', str(images), '--ann-file', ann,
        '--kinds', *kinds, '--seed', str(args.seed), *extra
    ]


def run_worker(args, worker, images, ann, kinds, timeout=1800):
    cmd = _worker_cmd(args, worker, images, ann, kinds)
    if args.quick:
        # smoke run: in this process (its peaks mean nothing anyway)
        import io
        from contextlib import redirect_stdout
        buf = io.StringIO()
        with redirect_stdout(buf):
            main(cmd)
        return C.parse_json_lines(buf.getvalue())[-1]
    handle = C.peak_rss_subprocess(SCRIPT, cmd[1:], timeout=timeout)
    return C.collect_subprocess(handle)


def run_dist(args, ann):
    import subprocess
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    env['PYTHONPATH'] = C.REPO + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('OMP_NUM_THREADS', '1')
    outs, procs = [], []
    t0 = time.perf_counter()
    for rank in range(args.dist_ranks):
        out = osp.join(C.work_dir('lvis_eval'), f'dist_rank{rank}.json')
        if osp.exists(out):
            os.remove(out)
        outs.append(out)
        cmd = [sys.executable, SCRIPT] + _worker_cmd(
            args, 'dist', args.dist_images, ann, ['bbox', 'segm'],
            ['--rank', str(rank), '--port', str(port), '--dist-ranks',
             str(args.dist_ranks), '--out', out])
        procs.append(subprocess.Popen(cmd, cwd=C.REPO, env=env,
                                      stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    errors = []
    for rank, proc in enumerate(procs):
        _, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            errors.append(f'rank {rank} failed ({proc.returncode}): '
                          f'{err.strip().splitlines()[-3:]}')
    wall = time.perf_counter() - t0
    if errors:
        return dict(error='; '.join(errors))
    ranks = []
    for out in outs:
        with open(out, encoding='utf-8') as f:
            ranks.append(json.load(f))
        os.remove(out)
    return dict(ranks=ranks, wall_s=round(wall, 1))


def main(argv=None):
    args = parse_args(argv)
    if args.worker == 'encode':
        return worker_encode(args)
    if args.worker == 'dist':
        return worker_dist(args)
    if args.worker:
        return worker_metric(args)
    machine = C.machine_info('cpu')
    t0 = time.perf_counter()
    full_ann = D.ann_file(max(args.images, args.dist_images), args.seed,
                          args.gen_procs)
    if args.images != max(args.images, args.dist_images):
        full_ann_ours = D.ann_file(args.images, args.seed, args.gen_procs)
    else:
        full_ann_ours = full_ann
    small_ann = D.ann_file(args.mmdet_images, args.seed, args.gen_procs) \
        if args.mmdet_images else None
    gt_files_s = round(time.perf_counter() - t0, 1)
    generate_s = D.prediction_cache(
        max(args.images, args.dist_images, args.mmdet_images,
            args.encode_images), args.seed, args.gen_procs)
    figures, rows = [], []
    # the full-size figure comes from the 2-rank run (2 cores: what this
    # machine evaluates with; each rank matches its images, rank 0
    # accumulates); --single-process also runs it in one process
    # (the smoke run does both: the ranks' metrics must equal one process')
    single = args.single_process or args.quick or not args.dist_ranks
    # 1. mask encoding on Mask R-CNN's tensors (a sample), on one core
    # while the side-by-side workers run on the other (all single-threaded;
    # its metric only tells which masks LVIS evaluates: the smaller
    # annotation file, whose first images are the same, reads faster)
    enc_ann = small_ann if args.mmdet_images >= args.encode_images \
        else full_ann_ours
    concurrent = not args.quick and (os.cpu_count() or 1) >= 2
    enc_handle, enc = None, {}
    if args.encode_images and concurrent:
        enc_handle = C.peak_rss_subprocess(
            SCRIPT, _worker_cmd(args, 'encode', args.encode_images, enc_ann,
                                ['segm'])[1:], timeout=1800)
    elif args.encode_images:
        enc = run_worker(args, 'encode', args.encode_images, enc_ann,
                         ['segm'])
    # 2. side by side with mmdet's LVISMetric, boxes
    if args.mmdet_images:
        ours_s = run_worker(args, 'ours', args.mmdet_images, small_ann,
                            ['bbox'])
        mmdet = run_worker(args, 'mmdet', args.mmdet_images, small_ann,
                           ['bbox'])
    if enc_handle is not None:
        enc = C.collect_subprocess(enc_handle)
    # 3. full size: 2 ranks (and, asked for, one process)
    dist = run_dist(args, full_ann) if args.dist_ranks else None
    ours = run_worker(args, 'ours', args.images, full_ann_ours,
                      ['bbox', 'segm']) if single else None
    enc_s = enc.get('mean_s_per_image', {}).get('ours')
    fig = dict(figure='lvis_eval_full', images=args.images,
               detections=args.images * S.DETS_PER_IMAGE,
               goal=f'<= {GOAL_S:.0f} s and <= {GOAL_MB / 1024:.0f} GB peak '
               'RSS (boxes + masks, full LVIS v1 val size, 2 cores)',
               gt_files_s=gt_files_s, generate_predictions_s=generate_s,
               data=f'{min(args.images, S.POOL)} distinct synthetic images, '
               f'image i repeating image i % {S.POOL} under its own id (the '
               'per-image evaluation work is that of distinct images)')
    if dist is not None and 'ranks' in dist and \
            args.dist_images == args.images:
        r0 = dist['ranks'][0]
        fig.update({k: r0[k] for k in (
            'kinds', 'gt_s', 'gt_peak_rss_mb', 'process_s',
            'process_peak_rss_mb', 'evaluate_s', 'evaluate_peak_rss_mb',
            'total_s', 'metrics', 'evaluate_steps') if k in r0})
        fig['run'] = (f'{args.dist_ranks} gloo ranks, one per core: rank '
                      "0's phases (it matches its own images, then "
                      "accumulates every rank's matches); peak RSS: the "
                      'larger rank')
        fig['peak_rss_mb'] = max(r['peak_rss_mb'] for r in dist['ranks'])
        fig['wall_s'] = dist['wall_s']
        if enc_s is not None:
            # each rank encodes the masks of its own images
            est = enc_s * args.images / args.dist_ranks
            fig['estimate_with_dense_mask_encoding'] = dict(
                note='ESTIMATE: rank 0 total + measured encode time per '
                'image (bench "encode", ours) x its images: the cost of '
                "process() on Mask R-CNN's (300, H, W) mask tensors",
                encode_s=round(est, 1), total_s=round(est + r0['total_s'],
                                                      1))
    elif ours is not None and 'error' not in ours:
        fig.update(ours)
        fig['run'] = 'one process'
    else:
        fig['error'] = (dist or {}).get('error') or (ours or {}).get(
            'error') or 'no full-size run'
    if 'total_s' in fig:
        fig['meets_goal'] = bool(fig['total_s'] <= GOAL_S
                                 and fig['peak_rss_mb'] <= GOAL_MB)
    if ours is not None and 'error' not in ours:
        one = dict(gt_s=ours['gt_s'], process_s=ours['process_s'],
                   evaluate_s=ours['evaluate_s'], total_s=ours['total_s'],
                   peak_rss_mb=ours['peak_rss_mb'],
                   evaluate_steps=ours.get('evaluate_steps'))
        if enc_s is not None:
            one['total_with_encoding_estimate_s'] = round(
                ours['total_s'] + enc_s * args.images, 1)
        fig['single_process'] = one
        if fig.get('run') == 'one process' and enc_s is not None:
            fig['estimate_with_dense_mask_encoding'] = dict(
                note='ESTIMATE: total + measured encode time per image '
                '(bench "encode", ours) x images',
                encode_s=round(enc_s * args.images, 1),
                total_s=one['total_with_encoding_estimate_s'])
        rows.append(['ours (FastLVISMetric), 1 process', f'{args.images}',
                     'bbox+segm', ours['gt_s'], ours['process_s'],
                     ours['evaluate_s'], ours['peak_rss_mb']])
    elif 'gt_s' in (dist or {}).get('ranks', [{}])[0]:
        # without a one-process run: its estimate from rank 0, whose
        # evaluation matched its share of the images (the other ranks'
        # shares, of the same size, timed as rank 0's per-image steps) and
        # accumulated all, with all images encoded by one process
        r0 = dist['ranks'][0]
        if enc_s is not None:
            matching_s = sum(
                steps.get(k, 0.0)
                for steps in r0.get('evaluate_steps', {}).values()
                for k in ('prepare_s', 'iou_s', 'match_s'))
            fig['one_process_with_encoding_estimate_s'] = round(
                r0['gt_s'] + r0['evaluate_s'] +
                (args.dist_ranks - 1) * matching_s + enc_s * args.images,
                1)
    fig['machine'] = machine
    figures.append(fig)

    if args.mmdet_images:
        small = dict(figure='lvis_eval_vs_mmdet', images=args.mmdet_images,
                     detections=args.mmdet_images * S.DETS_PER_IMAGE,
                     kinds=['bbox'], ours=ours_s, mmdet=mmdet,
                     machine=machine)
        if 'error' not in ours_s and 'error' not in mmdet:
            small['ratio_time_mmdet_over_ours'] = round(
                mmdet['total_s'] / ours_s['total_s'], 1)
            small['ratio_evaluate_mmdet_over_ours'] = round(
                mmdet['evaluate_s'] / ours_s['evaluate_s'], 1)
            small['ratio_peak_rss_mmdet_over_ours'] = round(
                mmdet['peak_rss_mb'] / ours_s['peak_rss_mb'], 2)
            keys = sorted(set(mmdet['metrics']) & set(ours_s['metrics']))
            small['metric_keys_compared'] = keys
            small['max_abs_metric_diff'] = max(
                abs(mmdet['metrics'][k] - ours_s['metrics'][k])
                for k in keys) if keys else None
            scale = args.images / args.mmdet_images
            small['mmdet_full_size_extrapolated'] = dict(
                note=f'LINEAR EXTRAPOLATION x{scale:.2f} of the measured '
                "run (boxes only; the issue measured mmdet's time and "
                'memory linear in the number of images)',
                evaluate_s=round(mmdet['evaluate_s'] * scale, 0),
                peak_rss_mb=round(mmdet['peak_rss_mb'] * scale, 0))
            for name, run in (('ours (FastLVISMetric)', ours_s),
                              ("mmdet's LVISMetric", mmdet)):
                rows.append([name, f'{args.mmdet_images}', 'bbox',
                             run['gt_s'], run['process_s'],
                             run['evaluate_s'], run['peak_rss_mb']])
        figures.append(small)
    if enc:
        enc = dict(enc, figure='mask_encoding', machine=machine)
        if concurrent:
            enc['concurrency'] = ('run while the side-by-side workers ran '
                                  'on the other core (all single-threaded)')
        figures.append(enc)

    # 4. two ranks
    if dist is not None:
        fig = dict(figure='lvis_eval_dist', images=args.dist_images,
                   world_size=args.dist_ranks, kinds=['bbox', 'segm'],
                   backend='gloo', machine=machine, **dist)
        if 'ranks' in dist:
            r0 = dist['ranks'][0]
            fig['rank0_peak_rss_mb'] = r0['peak_rss_mb']
            fig['rank0_evaluate_s'] = r0['evaluate_s']
            fig['metrics_equal_single_process'] = (
                r0.get('metrics') == ours.get('metrics')) \
                if ours is not None and args.dist_images == args.images \
                else None
            rows.append([f'ours, {args.dist_ranks} ranks (rank 0)',
                         f'{args.dist_images}', 'bbox+segm', r0['gt_s'],
                         r0['process_s'], r0['evaluate_s'],
                         r0['peak_rss_mb']])
        figures.append(fig)
    if not args.keep_data:
        import shutil
        shutil.rmtree(D.cache_dir(args.seed), ignore_errors=True)
    C.emit(figures, rows, ['metric', 'images', 'kind', 'gt s', 'process s',
                           'evaluate s', 'peak RSS MB'])


if __name__ == '__main__':
    main()

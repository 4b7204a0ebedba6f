# Copyright (c) icar_dense contributors. All rights reserved.
"""Run every benchmark of issue #8 and print the figures against their goals.

``make bench`` runs this file.  Each benchmark runs in its own process, one
after the other (they would disturb each other's timings), and prints JSON;
this script collects it, prints a summary table and writes everything to
``--json`` (default ``work_dirs/benchmarks/results.json``).

1. OV head overhead (``bench_ov_overhead.py``): text vs linear classifier,
   same detector, 1203 classes.  Goal: ratio <= 1.03.
2. Vocabulary scaling (``bench_vocab_scaling.py``): detector and segmenter
   at 1203 vs 21,841 classes.  Goal: time ratio <= 1.2; peak memory.
3. Text embedding cache (``bench_text_cache.py``): encoding a vocabulary
   with a roberta-base-sized encoder vs reading the disk cache.  A subset
   (``--text-classes`` x ``--text-templates``) is measured; the full
   1203 x 80 build is extrapolated from its per-prompt time (labelled).
4. InMaP (``bench_inmap.py``): n = 50,000, C = 1000, d = 256; a few
   gradient steps measured, 2000 extrapolated (labelled).
5. Training step (``bench_train_step.py``): our LVIS OV config vs mmdet's
   stock Swin-T Mask R-CNN at 512 x 512, batch 1.
6. LVIS evaluation (``bench_lvis_eval.py``): ``FastLVISMetric`` at LVIS v1
   val size (19,809 images x 300 detections, boxes and masks; goal <= 5 min
   and <= 8 GB peak RSS), side by side with mmdet's ``LVISMetric`` on 2,000
   images (boxes), the mask encoding of ``process`` and 2 gloo ranks.

Figures 1-5 took 483 s on a 2-core Intel Xeon (measured once); figure 6
alone took 548 s on a loaded 2-core AMD EPYC (docs/performance.md).

    python benchmarks/run_all.py                 # what `make bench` runs
    python benchmarks/run_all.py --quick         # smoke run (~1 minute)
    python benchmarks/run_all.py --device cuda --amp
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

ORDER = ['ov_overhead', 'vocab_scaling', 'text_cache', 'inmap', 'train_step',
         'lvis_eval']
LVIS_PROMPTS = 1203 * 80


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--only', nargs='+', choices=ORDER, default=ORDER)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument(
        '--text-classes',
        type=int,
        default=1203,
        help='classes of the measured text-encoding subset (x '
        '--text-templates prompts)')
    parser.add_argument('--text-templates', type=int, default=1)
    parser.add_argument('--inmap-iters', type=int, default=3)
    parser.add_argument(
        '--json',
        default=osp.join(C.REPO, 'work_dirs', 'benchmarks', 'results.json'))
    return parser.parse_args(argv)


def commands(args):
    py = sys.executable
    dev = ['--device', args.device] + (['--amp'] if args.amp else [])
    quick = ['--quick'] if args.quick else []
    text = ['--quick'] if args.quick else [
        '--classes', str(args.text_classes), '--templates',
        str(args.text_templates)
    ]
    inmap = ['--quick'] if args.quick else [
        '--iters',
        str(args.inmap_iters), '--warmup-iters', '1', '--repeats', '2'
    ]
    return {
        'ov_overhead': [py, osp.join(HERE, 'bench_ov_overhead.py'), *dev,
                        *quick],
        'vocab_scaling': [
            py, osp.join(HERE, 'bench_vocab_scaling.py'), *dev, *quick,
            '--dense-ref', '0'
        ],
        'text_cache': [
            py, osp.join(HERE, 'bench_text_cache.py'), '--device',
            args.device, *text
        ],
        'inmap': [
            py, osp.join(HERE, 'bench_inmap.py'), '--device',
            'cuda' if args.device.startswith('cuda') else 'cpu', *inmap
        ],
        'train_step': [
            py, osp.join(HERE, 'bench_train_step.py'), *dev, *quick
        ],
        'lvis_eval': [py, osp.join(HERE, 'bench_lvis_eval.py'), *quick],
    }


def run(cmd):
    env = dict(os.environ)
    env['PYTHONPATH'] = C.REPO + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('HF_HUB_OFFLINE', '1')
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=C.REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = '\n'.join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                           f'{tail}')
    return proc.stdout, wall


def _json_document(text: str) -> dict:
    start = text.index('{')
    return json.loads(text[start:text.rindex('}') + 1])


# the key each LVIS figure has when its run succeeded
_LVIS_KEYS = dict(lvis_eval_full='total_s',
                  lvis_eval_vs_mmdet='ratio_time_mmdet_over_ours',
                  mask_encoding='mean_s_per_image',
                  lvis_eval_dist='rank0_peak_rss_mb')


def _lvis_value(kind: str, fig: dict):
    """(value, goal, met) of one LVIS figure that has its results."""
    if kind == 'lvis_eval_full':
        return (f'{fig["images"]} images bbox+segm: {fig["total_s"]:.0f} s '
                f'(gt {fig["gt_s"]:.0f} + process {fig["process_s"]:.0f} + '
                f'evaluate {fig["evaluate_s"]:.0f}), peak RSS '
                f'{fig["peak_rss_mb"] / 1024:.2f} GB', fig['goal'],
                fig.get('meets_goal'))
    if kind == 'lvis_eval_vs_mmdet':
        diff = fig['max_abs_metric_diff']
        mmdet, ours = fig['mmdet'], fig['ours']
        return (f'{fig["images"]} images bbox: mmdet {mmdet["total_s"]:.1f} '
                f's / {mmdet["peak_rss_mb"]:.0f} MB vs ours '
                f'{ours["total_s"]:.1f} s / {ours["peak_rss_mb"]:.0f} MB '
                f'({fig["ratio_time_mmdet_over_ours"]}x time, '
                f'{fig["ratio_peak_rss_mmdet_over_ours"]}x peak); '
                f'max |metric diff| {diff}', 'same metrics',
                diff is not None and diff <= 1e-3)
    if kind == 'mask_encoding':
        m = fig['mean_s_per_image']
        return (f'per image of 300 masks: mmdet {m["mmdet"]:.3f} s, ours '
                f'{m["ours"]:.3f} s ({fig["speedup"]}x; all 300 cropped '
                f'{m["ours_all_masks"]:.3f} s), identical RLE '
                f'{fig["identical_rle"]}', 'no longer dominant', None)
    return (f'{fig["world_size"]} gloo ranks, {fig["images"]} images: rank 0 '
            f'peak RSS {fig["rank0_peak_rss_mb"]:.0f} MB, wall '
            f'{fig["wall_s"]:.0f} s', 'reported', None)


def _lvis_figures(stdout: str) -> list:
    out = []
    for fig in C.parse_json_lines(stdout):
        kind = fig.get('figure')
        if kind not in _LVIS_KEYS:
            continue
        if _LVIS_KEYS[kind] in fig:
            value, goal, met = _lvis_value(kind, fig)
        else:
            errors = [fig.get('error')] + [
                f'{side}: {fig[side].get("error")}' for side in ('ours',
                                                                 'mmdet')
                if isinstance(fig.get(side), dict) and 'error' in fig[side]]
            value = 'failed: ' + ('; '.join(filter(None, errors))
                                  or 'no results')
            goal, met = '-', False
        out.append(dict(name=f'LVIS evaluation: {kind}', value=value,
                        goal=goal, met=met, figure=kind, details=fig))
    return out


def summarise(name: str, stdout: str, args) -> list:
    """Figures (dicts with name, value, goal, met, details) of a run."""
    if name == 'lvis_eval':
        return _lvis_figures(stdout)
    if name in ('ov_overhead', 'vocab_scaling', 'train_step'):
        figures = C.parse_json_lines(stdout)
        out = []
        for fig in figures:
            if name == 'ov_overhead':
                label = (f'OV head overhead ({fig["classes"]} classes, '
                         f'{fig["input"]})')
                value = f'{fig["ratio"]:.3f}x'
                goal, met = '<= 1.03', fig['meets_goal']
            elif name == 'vocab_scaling':
                label = (f'vocabulary scaling {fig["task"]} '
                         f'{fig["classes"][0]} -> {fig["classes"][1]}')
                value = f'{fig["ratio"]:.3f}x time'
                if 'peak_rss_ratio' in fig:
                    value += f', {fig["peak_rss_ratio"]:.3f}x peak RSS'
                if fig.get('screen_dtype'):
                    value += f' (screening {fig["screen_dtype"]})'
                goal, met = '<= 1.2', fig['meets_goal']
            else:
                label = 'training step ours / mmdet stock'
                value = f'{fig["ratio"]:.3f}x time'
                if 'peak_rss_ratio' in fig:
                    value += f', {fig["peak_rss_ratio"]:.3f}x peak RSS'
                goal, met = 'reported', None
            out.append(
                dict(
                    name=label, value=value, goal=goal, met=met,
                    figure=fig.get('figure', name), details=fig))
        return out
    doc = _json_document(stdout)
    if name == 'text_cache':
        prompts = doc['prompts']
        per_prompt = doc['encode_s'] / prompts
        full = per_prompt * LVIS_PROMPTS
        doc['extrapolated'] = dict(
            note='LINEAR EXTRAPOLATION from the measured subset: '
            'per-prompt encode time x 96,240 prompts (1203 classes x 80 '
            'templates); the cache read does not depend on the number of '
            'templates (it stores one ensembled embedding per class)',
            prompts=LVIS_PROMPTS,
            encode_s=round(full, 1),
            encode_h=round(full / 3600, 2),
            speedup_vs_disk_cache=round(full / doc['disk_cache_load_s'], 1))
        value = (f'measured {prompts} prompts: encode {doc["encode_s"]:.1f} '
                 f's vs cache {doc["disk_cache_load_s"]:.2f} s; '
                 f'extrapolated 1203x80: {full / 3600:.2f} h '
                 f'({full / doc["disk_cache_load_s"]:.0f}x)')
        return [
            dict(
                name='text embedding cache (roberta-base size)',
                value=value,
                goal='reported',
                met=None,
                figure='text_cache',
                details=doc)
        ]
    res = doc['results'][0]
    if 'seconds_total_2000_extrapolated' in res:
        value = (f'measured {res["measured_iters"]} steps: '
                 f'{res["seconds_per_iter"]:.3f} s/step; extrapolated '
                 f'2000 steps: {res["seconds_total_2000_extrapolated"]:.0f} '
                 's')
    else:
        value = f'2000 steps: {res["seconds_total_2000"]:.1f} s'
    return [
        dict(
            name=f'InMaP n={res["n"]} C={res["classes"]} d={res["dim"]} '
            f'({res["device"]})',
            value=value,
            goal='reported',
            met=None,
            figure='inmap',
            details=doc)
    ]


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    cmds = commands(args)
    figures, runs = [], {}
    for name in ORDER:
        if name not in args.only:
            continue
        print(f'== {name}: {" ".join(osp.relpath(c, C.REPO) if c.startswith(C.REPO) else c for c in cmds[name][1:])}', flush=True)  # noqa: E501
        stdout, wall = run(cmds[name])
        runs[name] = dict(
            command=' '.join(
                osp.relpath(c, C.REPO) if c.startswith(C.REPO) else c
                for c in ['python'] + cmds[name][1:]),
            wall_s=round(wall, 1))
        for fig in summarise(name, stdout, args):
            fig['command'] = runs[name]['command']
            figures.append(fig)
            print(f'   {fig["name"]}: {fig["value"]} (goal {fig["goal"]})',
                  flush=True)
    total = time.perf_counter() - started
    gpu_note = None
    if not args.device.startswith('cuda'):
        import torch
        gpu_note = ('GPU figures not measured: no GPU available'
                    if not torch.cuda.is_available() else
                    'GPU available but not requested (--device cuda)')
    result = dict(
        machine=C.machine_info(args.device),
        load_average_start=load_start,
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        wall_s=round(total, 1),
        quick=args.quick,
        gpu=gpu_note,
        runs=runs,
        figures=figures)
    os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    print()
    rows = [[
        f['name'], f['value'], f['goal'], {
            True: 'yes',
            False: 'NO',
            None: '-'
        }[f['met']]
    ] for f in figures]
    widths = [max(len(str(r[i])) for r in rows + [['figure', 'value',
                                                  'goal', 'met']])
              for i in range(4)]
    for row in [['figure', 'value', 'goal', 'met']] + rows:
        print('  '.join(str(c).ljust(w) for c, w in zip(row, widths)))
    if result['machine'].get('screen_dtype'):
        print(f'large-vocabulary screening dtype: '
              f'{result["machine"]["screen_dtype"]} '
              f'({result["machine"]["screen_dtype_reason"]})')
    print(f'\nmachine: {result["machine"]["cpu"]}, '
          f'{result["machine"]["usable_cores"]} cores, torch '
          f'{result["machine"]["torch"]}, {result["machine"]["torch_threads"]}'
          f' threads; load average at start {load_start}, at end '
          f'{result["load_average_end"]}')
    if gpu_note:
        print(gpu_note)
    print(f'total wall time {total:.0f} s; results in {args.json}')


if __name__ == '__main__':
    main()

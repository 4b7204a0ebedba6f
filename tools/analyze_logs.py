"""Plot loss / metric curves from mmengine JSON logs to PNG.

    python tools/analyze_logs.py plot_curve WORK_DIR/*/vis_data/scalars.json \
        --keys loss mIoU --out curves.png
    python tools/analyze_logs.py cal_train_time \
        WORK_DIR/*/vis_data/scalars.json

Reads the ``scalars.json`` that mmengine's LocalVisBackend writes (one JSON
object per logged step); training entries have ``iter``/``step``, validation
entries carry the metrics.
"""
import argparse
import json
import os.path as osp
import sys

import numpy as np


def load_log(path):
    if not osp.isfile(path):
        raise FileNotFoundError(f'log file not found: {path!r}')
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{lineno}: not JSON ({err})') from err
    return records


def series(records, key):
    """(x, y) of ``key``; x is the training step (``step``/``iter``)."""
    xs, ys = [], []
    for rec in records:
        if key in rec:
            x = rec.get('step', rec.get('iter', len(xs)))
            xs.append(x)
            ys.append(rec[key])
    return np.asarray(xs), np.asarray(ys, dtype=float)


def plot_curve(args):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(args.keys), 1, squeeze=False,
                             figsize=(7, 3 * len(args.keys)))
    plotted = 0
    for ax, key in zip(axes[:, 0], args.keys):
        for path in args.logs:
            xs, ys = series(load_log(path), key)
            if len(xs) == 0:
                continue
            label = args.legend[args.logs.index(path)] if args.legend else \
                osp.basename(osp.dirname(osp.dirname(path))) or path
            ax.plot(xs, ys, marker='o' if len(xs) < 20 else None,
                    label=f'{label}: {key}')
            plotted += 1
        ax.set_xlabel('iter')
        ax.set_ylabel(key)
        ax.legend()
    if not plotted:
        sys.exit(f'analyze_logs: none of {args.keys} found in {args.logs}')
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f'saved {args.out}')


def cal_train_time(args):
    for path in args.logs:
        xs, times = series(load_log(path), 'time')
        if len(times) == 0:
            print(f'{path}: no "time" entries')
            continue
        print(f'{path}: {len(times)} logged iterations, '
              f'average {times.mean():.3f} s/iter, '
              f'slowest {times.max():.3f} s, fastest {times.min():.3f} s')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='task', required=True)
    curve = sub.add_parser('plot_curve')
    curve.add_argument('logs', nargs='+')
    curve.add_argument('--keys', nargs='+', default=['loss'])
    curve.add_argument('--legend', nargs='+')
    curve.add_argument('--title')
    curve.add_argument('--out', default='curves.png')
    timing = sub.add_parser('cal_train_time')
    timing.add_argument('logs', nargs='+')
    args = parser.parse_args()
    {'plot_curve': plot_curve, 'cal_train_time': cal_train_time}[args.task](
        args)


if __name__ == '__main__':
    main()

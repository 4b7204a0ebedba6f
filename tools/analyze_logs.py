"""Plot loss / metric curves and training time from mmengine JSON logs.

    python tools/analyze_logs.py plot_curve WORK_DIR/*/vis_data/scalars.json \
        --keys loss mIoU --out curves.png
    python tools/analyze_logs.py cal_train_time \
        WORK_DIR/*/vis_data/scalars.json [--include-outliers]

Reads the ``scalars.json`` that mmengine's LocalVisBackend writes, one JSON
object per logged step. Training records carry ``iter`` (and ``epoch`` in an
epoch-based run); validation records carry the metrics plus the *validation*
loop's ``time``/``data_time``, with ``step`` = the epoch (epoch-based) or the
iteration (iter-based).

Why not mmdet's ``tools/analysis_tools/analyze_logs.py``: it reads the
mmcv-1.x ``*.log.json`` layout (``mode``/``epoch`` in every record), so on
mmengine's ``scalars.json`` it skips iteration-based runs (all of mmseg's
schedules) and places no validation point; it also needs seaborn.
"""
import argparse
import json
import os.path as osp
import sys
from collections import OrderedDict

import numpy as np


class LogError(Exception):
    """A log that cannot give what was asked (message names the file)."""


def load_log(path):
    if not osp.isfile(path):
        raise LogError(f'log file not found: {path!r}')
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise LogError(f'{path}:{lineno}: not JSON ({err})') from err
            if not isinstance(record, dict):
                raise LogError(f'{path}:{lineno}: expected a JSON object, '
                               f'got {type(record).__name__}')
            records.append(record)
    return records


def is_train(record):
    # mmengine's LogProcessor adds ``iter`` to training records only
    return 'iter' in record


def training_steps(records):
    """The iteration axis of every record: a training record's own step;
    a validation record is placed at the last training step logged before
    it (its ``step`` is an epoch number in an epoch-based run)."""
    xs, last = [], 0
    for rec in records:
        if is_train(rec):
            last = rec.get('step', rec['iter'])
        xs.append(last)
    return xs


def series(records, key):
    """(iteration, value) of every record holding ``key``."""
    xs, ys = [], []
    for x, rec in zip(training_steps(records), records):
        if key in rec:
            xs.append(x)
            ys.append(rec[key])
    return np.asarray(xs), np.asarray(ys, dtype=float)


def available_keys(records):
    keys = OrderedDict()
    for rec in records:
        for key in rec:
            if key not in ('step', 'iter', 'epoch'):
                keys[key] = 'train' if is_train(rec) else 'val'
    return keys


def plot_curve(args):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    logs = [load_log(path) for path in args.logs]
    if args.legend and len(args.legend) != len(args.logs):
        raise LogError(f'--legend has {len(args.legend)} names for '
                       f'{len(args.logs)} logs')
    for path, records in zip(args.logs, logs):
        missing = [k for k in args.keys if k not in available_keys(records)]
        if missing:
            raise LogError(
                f'{path}: no {missing} in the log; keys there: '
                f'{", ".join(available_keys(records)) or "(none)"}')
    fig, axes = plt.subplots(len(args.keys), 1, squeeze=False,
                             figsize=(7, 3 * len(args.keys)))
    for ax, key in zip(axes[:, 0], args.keys):
        for i, (path, records) in enumerate(zip(args.logs, logs)):
            xs, ys = series(records, key)
            label = args.legend[i] if args.legend else \
                osp.basename(osp.dirname(osp.dirname(path))) or path
            ax.plot(xs, ys, marker='o' if len(xs) < 20 else None,
                    label=f'{label}: {key}')
        ax.set_xlabel('iteration')
        ax.set_ylabel(key)
        ax.legend()
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f'saved {args.out}')


def train_times(records, include_outliers=False):
    """Seconds per training iteration, grouped by epoch (one group for an
    iteration-based run). Without ``include_outliers`` the first record of
    each group is left out: it holds start-up and dataloader warm-up (as in
    mmdet's tool)."""
    groups = OrderedDict()
    for rec in records:
        if is_train(rec) and 'time' in rec:
            groups.setdefault(rec.get('epoch', 1), []).append(rec['time'])
    if not include_outliers:
        groups = OrderedDict((e, t[1:]) for e, t in groups.items() if t[1:])
    return groups


def cal_train_time(args):
    for path in args.logs:
        groups = train_times(load_log(path), args.include_outliers)
        if not groups:
            raise LogError(
                f'{path}: no training "time" records'
                + ('' if args.include_outliers else
                   ' beyond the first of each epoch (lower the log '
                   'interval, or pass --include-outliers)'))
        times = np.concatenate([np.asarray(t, float) for t in groups.values()])
        print(f'-----Analyze train time of {path}-----')
        if len(groups) > 1:
            means = {e: float(np.mean(t)) for e, t in groups.items()}
            slow = max(means, key=means.get)
            fast = min(means, key=means.get)
            print(f'slowest epoch {slow}, average time is {means[slow]:.4f}')
            print(f'fastest epoch {fast}, average time is {means[fast]:.4f}')
            print('time std over epochs is '
                  f'{np.std(list(means.values())):.4f}')
        print(f'average iter time: {times.mean():.4f} s/iter '
              f'({len(times)} logged iterations)')


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest='task', required=True)
    curve = sub.add_parser('plot_curve', allow_abbrev=False)
    curve.add_argument('logs', nargs='+', help='scalars.json files')
    curve.add_argument('--keys', nargs='+', default=['loss'])
    curve.add_argument('--legend', nargs='+')
    curve.add_argument('--title')
    curve.add_argument('--out', default='curves.png')
    timing = sub.add_parser('cal_train_time', allow_abbrev=False)
    timing.add_argument('logs', nargs='+', help='scalars.json files')
    timing.add_argument(
        '--include-outliers', action='store_true',
        help='include the first record of every epoch in the average')
    args = parser.parse_args()
    try:
        {'plot_curve': plot_curve, 'cal_train_time': cal_train_time}[
            args.task](args)
    except LogError as err:
        sys.exit(f'analyze_logs: {err}')


if __name__ == '__main__':
    main()

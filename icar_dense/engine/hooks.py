"""Hooks shared by the three tasks."""
import json
import os.path as osp

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .safety import atomic_write


def write_json_atomic(obj, path):
    """Write JSON so that ``path`` is the old or the complete new file."""
    atomic_write(json.dumps(obj, indent=2, default=_to_builtin), path)


def _to_builtin(value):
    if hasattr(value, 'item'):  # numpy / torch scalars
        return value.item()
    if hasattr(value, 'tolist'):
        return value.tolist()
    return str(value)


@HOOKS.register_module()
class SaveMetricsHook(Hook):
    """Write every validation/test result to the work dir as JSON.

    It runs at a higher priority than ``LoggerHook`` so the numbers are on
    disk before they are printed: a crash in logging or visualisation loses
    nothing.  Validation results are appended to ``metrics_val.jsonl``;
    test results go to ``metrics_test.json``.
    """
    priority = 'HIGH'

    @master_only
    def after_val_epoch(self, runner, metrics=None):
        if not metrics:
            return
        record = dict(epoch=runner.epoch, iter=runner.iter, **metrics)
        path = osp.join(runner.work_dir, 'metrics_val.jsonl')
        history = []
        if osp.exists(path):
            with open(path) as f:
                history = [line for line in f.read().splitlines() if line]
        history.append(json.dumps(record, default=_to_builtin))
        atomic_write('\n'.join(history) + '\n', path)

    @master_only
    def after_test_epoch(self, runner, metrics=None):
        if metrics is None:
            return
        write_json_atomic(
            dict(checkpoint=runner.cfg.get('load_from'), metrics=metrics),
            osp.join(runner.work_dir, 'metrics_test.json'))

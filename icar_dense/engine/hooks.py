"""Hooks shared by the three tasks."""
import json
import os
import os.path as osp
import tempfile

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def write_json_atomic(obj, path):
    """Write JSON so that ``path`` is either the old or the complete new file."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(path)),
                               prefix='.' + osp.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=2, default=_to_builtin)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


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
        _write_text_atomic('\n'.join(history) + '\n', path)

    @master_only
    def after_test_epoch(self, runner, metrics=None):
        if metrics is None:
            return
        write_json_atomic(
            dict(checkpoint=runner.cfg.get('load_from'), metrics=metrics),
            osp.join(runner.work_dir, 'metrics_test.json'))


def _write_text_atomic(text, path):
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(path)),
                               prefix='.' + osp.basename(path), suffix='.tmp')
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.replace(tmp, path)

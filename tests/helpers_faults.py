"""Test-only fault injection for the reliability tests.

Imported into tool runs with ``--cfg-options
custom_imports.imports=[icar_dense,helpers_faults]`` and ``PYTHONPATH=tests``
(hooks registered in mmengine's root ``HOOKS``, so every scope finds them).

``FaultHook(mode=..., iter=N)`` modes:

* ``'none'``: does nothing (a config can carry the hook and switch it on
  from the command line with ``custom_hooks.1.mode=...``);
* ``'kill_after_checkpoint'``: SIGKILL right after iteration N's checkpoint
  was saved (``after_train_iter`` at the lowest priority, i.e. after
  ``CheckpointHook``);
* ``'kill_during_checkpoint_write'``: while iteration N's checkpoint is being
  written, once its bytes are in the file but before the writer commits them
  (its ``fsync``), cut the file to half its size and SIGKILL -- what a
  power cut or an OOM kill in the middle of ``torch.save`` leaves behind;
* ``'raise_on_rank'``: raise ``RuntimeError`` on rank ``rank`` before
  iteration N (the other ranks carry on into the next collective); the
  time of the failure goes to ``WORK_DIR/fault_time``;
* ``'pause'``: before iteration N, write ``WORK_DIR/paused`` (holding the
  pid) and wait -- at most ``seconds`` -- until a signal is pending for
  ``SignalCheckpointHook`` or ``WORK_DIR/go`` exists (a test sends a real
  signal, or starts a second run, at a known iteration);
* ``'disk_full'``: every file opened for writing whose name contains
  ``match`` fails with ``OSError(ENOSPC)`` from the start of each
  validation / test epoch to its end (the metric files by default).

``RaisingMetric`` is a metric whose ``compute_metrics`` raises (after
``process`` saw every sample).

``CrashingLoggerHook`` is mmengine's ``LoggerHook`` whose validation/test
epoch end raises after recording the metrics it was given.

:func:`run_script` runs a ``tools/*.py`` script in the calling process.
"""
import builtins
import errno
import os
import runpy
import signal
import sys
import time

from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook, LoggerHook
from mmengine.registry import HOOKS, METRICS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODES = ('none', 'kill_after_checkpoint', 'kill_during_checkpoint_write',
         'raise_on_rank', 'pause', 'disk_full')


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class FaultHook(Hook):
    priority = 'LOWEST'

    def __init__(self, mode='none', iter=0, rank=1, seconds=120.0,
                 match='metrics_'):
        if mode not in MODES:
            raise ValueError(f'FaultHook: mode must be one of {MODES}, '
                             f'got {mode!r}')
        self.mode = mode
        self.iter = int(iter)
        self.rank = int(rank)
        self.seconds = float(seconds)
        self.match = match
        self._open = None

    # -- disk_full -------------------------------------------------------
    def _fill_disk(self, runner):
        if self.mode != 'disk_full' or self._open is not None:
            return
        real_open, match = builtins.open, self.match

        def full_open(file, mode='r', *args, **kwargs):
            name = os.path.basename(str(file))
            if match in name and any(c in mode for c in 'wxa+'):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                              str(file))
            return real_open(file, mode, *args, **kwargs)

        self._open = real_open
        builtins.open = full_open

    def _free_disk(self, runner, metrics=None):
        if self._open is not None:
            builtins.open = self._open
            self._open = None

    before_val_epoch = before_test_epoch = _fill_disk
    after_val_epoch = after_test_epoch = _free_disk

    # -- pause -------------------------------------------------------------
    def _pause(self, runner):
        marker = os.path.join(runner.work_dir, 'paused')
        with open(marker + '.tmp', 'w') as f:
            f.write(str(os.getpid()))
        os.replace(marker + '.tmp', marker)
        print(f'FaultHook: paused before iteration {self.iter}', flush=True)
        go = os.path.join(runner.work_dir, 'go')
        end = time.time() + self.seconds
        while time.time() < end and not os.path.exists(go) and not any(
                getattr(h, 'pending_signal', None) for h in runner.hooks):
            time.sleep(0.05)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.mode == 'pause' and runner.iter + 1 == self.iter:
            self._pause(runner)
        if (self.mode == 'raise_on_rank' and runner.iter + 1 == self.iter
                and get_rank() == self.rank):
            with open(os.path.join(runner.work_dir, 'fault_time'), 'w') as f:
                f.write(repr(time.time()))
            raise RuntimeError(f'FaultHook: injected failure on rank '
                               f'{self.rank} before iteration {self.iter}')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.mode == 'kill_after_checkpoint' and \
                runner.iter + 1 == self.iter:
            print(f'FaultHook: SIGKILL after iteration {self.iter}',
                  flush=True)
            _die()

    def before_save_checkpoint(self, runner, checkpoint):
        if (self.mode != 'kill_during_checkpoint_write'
                or checkpoint['meta']['iter'] != self.iter):
            return

        def fsync_then_die(fd):
            size = os.fstat(fd).st_size
            os.ftruncate(fd, size // 2)
            print(f'FaultHook: SIGKILL while writing the checkpoint of '
                  f'iteration {self.iter} ({size} bytes, cut to '
                  f'{size // 2})', flush=True)
            _die()

        os.fsync = fsync_then_die


@METRICS.register_module()
class RaisingMetric(BaseMetric):
    """Counts the samples it is given, then fails to compute."""

    def process(self, data_batch, data_samples):
        self.results.extend(1 for _ in data_samples)

    def compute_metrics(self, results):
        raise RuntimeError(f'RaisingMetric: the metric failed after '
                           f'{len(results)} samples (injected)')


@HOOKS.register_module()
class CrashingLoggerHook(LoggerHook):
    """``LoggerHook`` that crashes when it gets evaluation results."""

    received = {}

    def after_val_epoch(self, runner, metrics=None):
        CrashingLoggerHook.received['val'] = dict(metrics or {})
        raise RuntimeError('CrashingLoggerHook: logging failed (val)')

    def after_test_epoch(self, runner, metrics=None):
        CrashingLoggerHook.received['test'] = dict(metrics or {})
        raise RuntimeError('CrashingLoggerHook: logging failed (test)')


def run_script(script, *args):
    """Run ``tools/<script>`` in this process as ``python tools/<script>``
    would; return the exception it ends with (``SystemExit`` for
    ``sys.exit(message)``).  Saves the start-up of a new interpreter."""
    argv = sys.argv
    sys.argv = [os.path.join(REPO, 'tools', script), *args]
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
    except BaseException as err:  # noqa: BLE001
        return err
    finally:
        sys.argv = argv
    raise AssertionError(f'tools/{script} {list(args)} did not fail')

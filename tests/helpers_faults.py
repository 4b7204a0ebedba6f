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
  time of the failure goes to ``WORK_DIR/fault_time``.

``CrashingLoggerHook`` is mmengine's ``LoggerHook`` whose validation/test
epoch end raises after recording the metrics it was given.

:func:`run_script` runs a ``tools/*.py`` script in the calling process.
"""
import os
import runpy
import signal
import sys
import time

from mmengine.dist import get_rank
from mmengine.hooks import Hook, LoggerHook
from mmengine.registry import HOOKS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODES = ('none', 'kill_after_checkpoint', 'kill_during_checkpoint_write',
         'raise_on_rank')


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class FaultHook(Hook):
    priority = 'LOWEST'

    def __init__(self, mode='none', iter=0, rank=1):
        if mode not in MODES:
            raise ValueError(f'FaultHook: mode must be one of {MODES}, '
                             f'got {mode!r}')
        self.mode = mode
        self.iter = int(iter)
        self.rank = int(rank)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
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

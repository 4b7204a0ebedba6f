"""Hooks shared by the three tasks, named in the default runtimes.

* :class:`SaveMetricsHook` -- evaluation results on disk before logging;
  if the file cannot be written (full disk), the results are still logged
  and the run ends with an error saying so.
* :class:`SafeCheckpointHook` -- mmengine's ``CheckpointHook`` with a
  crash-safe order: new checkpoint (atomically, ``atomic_local`` backend),
  then the ``last_checkpoint`` pointer (atomically), then the rotation of
  old checkpoints.
* :class:`SignalCheckpointHook` -- SIGTERM / SIGINT during training: the
  current iteration ends, a checkpoint is saved, the run exits (128 + signal
  number) and ``tools/train.py --resume`` continues from it.

They are registered in mmengine's root ``HOOKS`` registry, which the mmdet,
mmseg and mmaction2 scopes fall back to.
"""
import json
import os.path as osp
import signal
import threading

from mmengine.dist import is_main_process, master_only
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from icar_dense.checkpoint.io import atomic_write, write_json_atomic
from .fileio import atomic_backend_args


def _to_builtin(value):
    if hasattr(value, 'tolist'):  # numpy / torch: scalars and arrays
        return value.tolist()
    return str(value)


class ResultsNotSavedError(RuntimeError):
    """Evaluation results were computed (and logged) but not written."""


@HOOKS.register_module()
class SaveMetricsHook(Hook):
    """Write every validation/test result to the work dir as JSON.

    It runs at a higher priority than ``LoggerHook`` so the numbers are on
    disk before they are printed: a crash in logging or visualisation loses
    nothing.  Validation results are appended to ``metrics_val.jsonl``;
    test results go to ``metrics_test.json`` (the latest test of the work
    dir) and to the run's timestamped log folder (one file per test run, so
    two tests sharing a work dir keep both results).

    A write that fails (``OSError``: full disk, read-only or removed folder)
    does not lose the results: they are logged at ERROR level with the path
    and the reason, ``LoggerHook`` prints them as usual, and the run ends
    with :class:`ResultsNotSavedError` (non-zero exit) when it is over.
    """
    priority = 'HIGH'

    def __init__(self):
        self.failures = []

    def _write(self, runner, what, metrics, write, path):
        try:
            write()
        except OSError as err:
            message = (f'{what} results could not be written to {path}: '
                       f'{err}. The results are: '
                       f'{json.dumps(metrics, default=_to_builtin)}')
            self.failures.append(message)
            runner.logger.error(message)

    @master_only
    def after_val_epoch(self, runner, metrics=None):
        if not metrics:
            return
        record = dict(epoch=runner.epoch, iter=runner.iter, **metrics)
        path = osp.join(runner.work_dir, 'metrics_val.jsonl')

        def write():
            history = []
            if osp.exists(path):
                with open(path) as f:
                    history = [line for line in f.read().splitlines()
                               if line]
            history.append(json.dumps(record, default=_to_builtin))
            atomic_write('\n'.join(history) + '\n', path)

        self._write(runner, 'validation', record, write, path)

    @master_only
    def after_test_epoch(self, runner, metrics=None):
        if metrics is None:
            return
        record = dict(checkpoint=runner.cfg.get('load_from'),
                      metrics=metrics)
        for folder in (runner.log_dir, runner.work_dir):
            path = osp.join(folder, 'metrics_test.json')
            self._write(runner, 'test', metrics,
                        lambda p=path: write_json_atomic(record, p), path)
            if self.failures:
                break  # the latest-result copy must not outlive a failure

    def after_run(self, runner):
        if self.failures:
            raise ResultsNotSavedError(
                '; '.join(self.failures) + ' (also in the log: '
                f'{_log_file(runner)})')


def _log_file(runner):
    return osp.join(runner.log_dir, f'{runner.timestamp}.log')


# ----------------------------------------------------------------------------
# crash-safe checkpoint rotation
# ----------------------------------------------------------------------------
@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that a kill at any moment leaves resumable.

    mmengine 0.10.7 removes the oldest checkpoint (``max_keep_ckpts``)
    *before* writing the new one and writes the ``last_checkpoint`` pointer
    in place: a kill in between leaves a pointer to a deleted or
    half-written file.  Here the new checkpoint is written first (atomically
    on local disks: without ``backend_args`` it uses the ``atomic_local``
    backend of :mod:`icar_dense.engine.fileio`), then the pointer
    (atomically), and only then the oldest checkpoint is removed.  Same
    arguments and bookkeeping (``keep_ckpt_ids`` and ``last_ckpt`` in the
    message hub) as ``CheckpointHook``.
    """

    def before_train(self, runner):
        self.backend_args = atomic_backend_args(
            self.out_dir or runner.work_dir, self.backend_args,
            self.file_client_args)
        super().before_train(runner)

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = None
        if self.max_keep_ckpts > 0:
            if not (len(self.keep_ckpt_ids) > 0
                    and self.keep_ckpt_ids[-1] == step):
                if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                    outdated = self.keep_ckpt_ids.popleft()
                self.keep_ckpt_ids.append(step)
                runner.message_hub.update_info('keep_ckpt_ids',
                                               list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        atomic_write(str(self.last_ckpt),
                     osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)


# ----------------------------------------------------------------------------
# SIGTERM / SIGINT: checkpoint, then exit
# ----------------------------------------------------------------------------
@HOOKS.register_module()
class SignalCheckpointHook(Hook):
    """Save a checkpoint when training is asked to stop by a signal.

    Between ``before_train`` and ``after_train`` the signals in ``signals``
    (default SIGTERM, what schedulers and ``kill`` send, and SIGINT, Ctrl-C)
    only set a flag.  At the end of the current training iteration (or
    validation iteration, during a validation inside training of a
    single-process run) a checkpoint of the completed iterations is saved
    through the run's ``CheckpointHook`` (same folder, name and rotation as
    its periodic checkpoints, and the ``last_checkpoint`` pointer), unless
    that iteration's checkpoint was just saved; then the process exits
    with status 128 + the signal number (143 for SIGTERM, 130 for SIGINT).
    ``tools/train.py CONFIG --resume`` continues from that checkpoint.  A
    second signal stops at once, without a checkpoint.

    With an epoch-based ``CheckpointHook`` the checkpoint is
    ``iter_N.pth``; resuming it runs the interrupted epoch again from its
    start (mmengine resumes epoch-based loops at epoch boundaries).  In a
    distributed run every rank checks, every ``sync_interval`` iterations,
    whether any rank got a signal (one small all-reduce), so all ranks stop
    at the same iteration.

    Args:
        signals (Sequence[str]): Signal names. Defaults to
            ``('SIGTERM', 'SIGINT')``.
        sync_interval (int): Iterations between the all-reduces of a
            distributed run. Defaults to 1.
    """
    priority = 'LOWEST'  # after CheckpointHook's own after_train_iter

    def __init__(self, signals=('SIGTERM', 'SIGINT'), sync_interval=1):
        if isinstance(signals, str):
            signals = (signals, )
        self.signals = []
        for name in signals:
            number = getattr(signal, str(name), None)
            if not isinstance(number, signal.Signals):
                raise ValueError(f'SignalCheckpointHook: unknown signal '
                                 f'{name!r} (e.g. SIGTERM, SIGINT, SIGUSR1)')
            self.signals.append(number)
        if int(sync_interval) < 1:
            raise ValueError('SignalCheckpointHook: sync_interval must be '
                             f'>= 1, got {sync_interval!r}')
        self.sync_interval = int(sync_interval)
        self.pending_signal = None
        self._previous = {}

    # -- handlers ----------------------------------------------------------
    def _handle(self, signum, frame):
        if self.pending_signal is not None:  # second signal: stop now
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.pending_signal = signum

    def before_train(self, runner):
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('SignalCheckpointHook: not in the main '
                                  'thread, signals are not handled')
            return
        self.pending_signal = None
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)

    def _restore(self):
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def after_train(self, runner):
        self._restore()

    # -- checks ------------------------------------------------------------
    def _requested(self, runner, step):
        pending = self.pending_signal
        if runner.world_size > 1:
            if step % self.sync_interval:
                return None
            import torch
            from mmengine.dist import all_reduce
            flag = torch.tensor([int(pending or 0)])
            all_reduce(flag, op='max')
            pending = int(flag.item()) or None
        return pending

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if not self._previous:
            return
        done = runner.iter + 1  # the loop counts this iteration after us
        signum = self._requested(runner, done)
        if signum is not None:
            self._save_and_exit(runner, signum, iters=done,
                                epoch=runner.epoch)

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        # a validation inside training: the loop has counted its iteration
        # (and an epoch-based loop its epoch). Single process only: ranks
        # may run different numbers of validation iterations, so a
        # distributed run acts at the end of its next training iteration.
        if not self._previous or runner.world_size > 1:
            return
        signum = self.pending_signal
        if signum is not None:
            self._save_and_exit(runner, signum, iters=runner.iter,
                                epoch=runner.epoch)

    # -- saving ------------------------------------------------------------
    def _save_and_exit(self, runner, signum, iters, epoch):
        name = signal.Signals(signum).name
        meta = dict(epoch=epoch, iter=iters)
        ckpt_hook = next((h for h in runner.hooks
                          if isinstance(h, CheckpointHook)), None)
        if ckpt_hook is not None and not ckpt_hook.by_epoch:
            path = ckpt_hook.file_backend.join_path(
                ckpt_hook.out_dir, ckpt_hook.filename_tmpl.format(iters))
            if (ckpt_hook.last_ckpt != path
                    or not ckpt_hook.file_backend.exists(path)):
                ckpt_hook._save_checkpoint_with_step(runner, iters, meta)
        else:
            out_dir = (ckpt_hook.out_dir if ckpt_hook is not None
                       and ckpt_hook.out_dir else runner.work_dir)
            filename = f'iter_{iters}.pth'
            path = osp.join(out_dir, filename)
            runner.save_checkpoint(out_dir, filename, meta=meta,
                                   by_epoch=False)
            if is_main_process():
                atomic_write(path, osp.join(runner.work_dir,
                                            'last_checkpoint'))
        self._restore()
        print_log(
            f'{name} received: stopped after iteration {iters}, checkpoint '
            f'{path}; continue with tools/train.py CONFIG --work-dir '
            f'{runner.work_dir} --resume', logger='current', level=30)
        raise SystemExit(128 + signum)

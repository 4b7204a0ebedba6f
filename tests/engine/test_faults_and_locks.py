"""Faults, work-dir locks and config checks through tools/train.py and
tools/test.py (issue 15, classes 1, 2 and 4).  See docs/guarantees.md.

Runs that must fail early (config checks, a refused second run) run the
tool in this process (``run_script``); runs that train or are signalled run
it as a subprocess.  One tiny trained run is shared by the module.
"""
import errno
import glob
import itertools
import json
import os
import os.path as osp
import pickle
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import icar_dense  # noqa: F401
from conftest import REPO, check_ok, run_tool, tool_env
from helpers_faults import run_script  # also registers the fault hooks
from icar_dense.engine import locks
from icar_dense.engine.hooks import ResultsNotSavedError
from icar_dense.engine.preflight import (ConfigCheckError,
                                         accepted_arguments, problems_of)
from icar_dense.checkpoint import load_checkpoint_file

pytestmark = pytest.mark.usefixtures('fast_cpu')

TINY = osp.join(REPO, 'tests', 'configs', 'tiny_seg_fcn.py')
ENV = dict(PYTHONPATH='tests')


def write_config(path, data_root, max_iters=2, interval=2, **extra):
    """tiny_seg_fcn with a FaultHook slot (custom_hooks.1)."""
    lines = [
        f'_base_ = [{TINY!r}]',
        "custom_imports = dict(imports=['icar_dense', 'helpers_faults'], "
        'allow_failed_imports=False)',
        f'train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})',
        f'default_hooks = dict(checkpoint=dict(interval={interval}))',
        "custom_hooks = [dict(type='SaveMetricsHook'), "
        "dict(type='FaultHook', mode='none')]",
    ]
    for split in ('train', 'val', 'test'):
        lines.append(f'{split}_dataloader = dict(dataset=dict('
                     f'data_root={data_root!r}))')
    for key, value in extra.items():
        lines.append(f'{key} = {value!r}')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def log_of(proc):
    return proc.stdout + proc.stderr


def files_under(folder):
    """Every file below ``folder`` (relative paths), [] if it is missing."""
    found = []
    for root, _, names in os.walk(folder):
        found += [osp.relpath(osp.join(root, n), folder) for n in names]
    return sorted(found)


def result_files(folder):
    """Files that look like a result: checkpoints, metrics, predictions."""
    return [f for f in files_under(folder)
            if f.endswith(('.pth', '.pkl', 'metrics_val.jsonl',
                           'metrics_test.json', 'last_checkpoint'))]


def train(config, work, *options, resume=False):
    """tools/train.py as a subprocess."""
    args = ['python', 'tools/train.py', config, '--work-dir', work]
    if resume:
        args.append('--resume')
    if options:
        args += ['--cfg-options', *options]
    return run_tool(args, env=ENV, timeout=300)


def start_train(config, work, *options):
    args = ['python', 'tools/train.py', config, '--work-dir', work]
    if options:
        args += ['--cfg-options', *options]
    return subprocess.Popen(args, cwd=REPO, env=tool_env(ENV), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(path, proc=None, timeout=180):
    """Wait until ``path`` exists (the run reached its pause)."""
    end = time.time() + timeout
    while not osp.exists(path):
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f'the run ended ({proc.returncode}) '
                                 f'before {path}:\n{(out + err)[-4000:]}')
        if time.time() > end:
            if proc is not None:
                proc.kill()
            raise AssertionError(f'no {path} after {timeout} s')
        time.sleep(0.05)


def finish(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


_runs = itertools.count()


def tool(script, *args, options=()):
    """Run ``tools/<script> ARGS --cfg-options OPTIONS`` in this process
    (no interpreter start-up: the tiny runs take a few seconds).

    Returns ``(exception or None, log text)``; each run gets its own
    ``experiment_name`` and so its own logger and log file.
    """
    name = f'faults_run{next(_runs)}'
    argv = [osp.join(REPO, 'tools', script), *args, '--cfg-options',
            f'experiment_name={name}', *options]
    saved, sys.argv = sys.argv, argv
    error = None
    try:
        runpy.run_path(argv[0], run_name='__main__')
    except BaseException as err:  # noqa: BLE001
        error = err
    finally:
        sys.argv = saved
    work = args[args.index('--work-dir') + 1]
    for log in sorted(glob.glob(osp.join(work, '*', '*.log'))):
        with open(log) as f:
            text = f.read()
        if f"'{name}'" in text:  # the config, printed at the start
            return error, text, log
    return error, '', None


@pytest.fixture(scope='module')
def config(tiny_ade_root, tmp_path_factory):
    return write_config(tmp_path_factory.mktemp('cfg') / 'tiny.py',
                        tiny_ade_root)


@pytest.fixture(scope='module')
def trained(config, tmp_path_factory):
    """One finished 2-iteration run: iter_2.pth, metrics_val.jsonl."""
    work = str(tmp_path_factory.mktemp('trained'))
    error, _, _ = tool('train.py', config, '--work-dir', work)
    assert error is None, repr(error)
    ckpt = osp.join(work, 'iter_2.pth')
    assert load_checkpoint_file(ckpt)['meta']['iter'] == 2
    return dict(work=work, ckpt=ckpt)


# ----------------------------------------------------------------------------
# 1. work lost on a fault
# ----------------------------------------------------------------------------
def test_test_results_logged_when_the_metrics_file_cannot_be_written(
        config, trained, tmp_path, capsys):
    """Full disk while tools/test.py saves its metrics: they are printed and
    logged, the error names the file, the run fails."""
    work = str(tmp_path / 'test')
    error, log, log_file = tool('test.py', config, trained['ckpt'],
                                '--work-dir', work,
                                options=['custom_hooks.1.mode=disk_full'])
    assert isinstance(error, ResultsNotSavedError), repr(error)
    text = str(error)
    assert osp.join(work, 'metrics_test.json') in text or \
        'metrics_test.json' in text
    assert 'No space left on device' in text
    assert '"mIoU"' in text  # the numbers are in the error itself
    assert f'also in the log: {log_file}' in text
    assert 'mIoU:' in capsys.readouterr().out  # LoggerHook printed them
    assert 'mIoU:' in log and 'could not be written' in log
    assert result_files(work) == []


def test_validation_results_logged_when_the_jsonl_cannot_be_written(
        config, tmp_path, capsys):
    work = str(tmp_path / 'work')
    error, log, _ = tool('train.py', config, '--work-dir', work,
                         options=['custom_hooks.1.mode=disk_full'])
    assert isinstance(error, ResultsNotSavedError), repr(error)
    text = str(error)
    assert osp.join(work, 'metrics_val.jsonl') in text
    assert 'No space left on device' in text and '"mIoU"' in text
    assert 'mIoU:' in capsys.readouterr().out and 'mIoU:' in log
    # training itself was not lost; no metrics file pretends to be complete
    assert load_checkpoint_file(osp.join(work, 'iter_2.pth'))['meta'][
        'iter'] == 2
    assert not osp.exists(osp.join(work, 'metrics_val.jsonl'))


SIGNAL_RUN = ('train_cfg.max_iters=6', 'train_cfg.val_interval=6',
              'default_hooks.checkpoint.interval=100')


def _assert_stopped_at_3(work, log, signame):
    ckpt = osp.join(work, 'iter_3.pth')
    assert f'{signame} received: stopped after iteration 3, checkpoint ' \
        f'{ckpt}' in log
    assert '--resume' in log
    assert 'Iter(train) [3/6]' in log and 'Iter(train) [4/6]' not in log
    assert load_checkpoint_file(ckpt)['meta']['iter'] == 3
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == ckpt
    assert not glob.glob(osp.join(work, '.*.tmp'))  # written atomically
    # nothing that looks like a finished run
    assert result_files(work) == ['iter_3.pth', 'last_checkpoint']


def test_sigterm_mid_training_writes_a_checkpoint_then_resume(config,
                                                              tmp_path):
    """A real SIGTERM sent to a tools/train.py process while it trains
    (paused before iteration 3 of 6, no periodic checkpoint): iteration 3
    ends, iter_3.pth is written and named by last_checkpoint, exit code
    143; --resume continues at iteration 4."""
    work = str(tmp_path / 'work')
    proc = start_train(config, work, *SIGNAL_RUN, 'custom_hooks.1.mode=pause',
                       'custom_hooks.1.iter=3')
    wait_for(osp.join(work, 'paused'), proc)
    os.kill(proc.pid, signal.SIGTERM)
    done = finish(proc)
    assert done.returncode == 143, log_of(done)[-3000:]
    _assert_stopped_at_3(work, done.stdout, 'SIGTERM')

    error, log, _ = tool('train.py', config, '--work-dir', work, '--resume',
                         options=SIGNAL_RUN)
    assert error is None, repr(error)
    assert 'iter_3.pth' in log and 'resumed' in log.lower()
    assert 'Iter(train) [4/6]' in log and 'Iter(train) [3/6]' not in log
    assert load_checkpoint_file(osp.join(work, 'iter_6.pth'))['meta'][
        'iter'] == 6


def test_sigint_mid_training_writes_a_checkpoint(config, tmp_path):
    """Ctrl-C: a real SIGINT to the process running tools/train.py (this
    one), sent at a known iteration; exit code 130."""
    work = str(tmp_path / 'work')
    handler = signal.getsignal(signal.SIGINT)
    sender = threading.Thread(target=lambda: (
        wait_for(osp.join(work, 'paused')),
        os.kill(os.getpid(), signal.SIGINT)), daemon=True)
    sender.start()
    error, log, _ = tool('train.py', config, '--work-dir', work,
                         options=[*SIGNAL_RUN, 'custom_hooks.1.mode=pause',
                                  'custom_hooks.1.iter=3'])
    sender.join(5)
    assert isinstance(error, SystemExit) and error.code == 130, repr(error)
    _assert_stopped_at_3(work, log, 'SIGINT')
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_predictions_written_before_a_failing_metric(config, trained,
                                                     tiny_ade_root,
                                                     tmp_path):
    """--out: the predictions are on disk before any metric runs, so a
    metric that fails loses no inference; no metrics file is written."""
    work, out = str(tmp_path / 'test'), str(tmp_path / 'pred.pkl')
    failing = write_config(
        tmp_path / 'failing_metric.py', tiny_ade_root,
        test_evaluator=[dict(type='IoUMetric', iou_metrics=['mIoU']),
                        dict(type='RaisingMetric')])
    error, _, _ = tool('test.py', failing, trained['ckpt'], '--work-dir',
                       work, '--out', out)
    assert isinstance(error, RuntimeError), repr(error)
    assert 'RaisingMetric: the metric failed after 2 samples' in str(error)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2
    assert all('pred_sem_seg' in p for p in predictions)
    assert result_files(work) == []


def test_result_dump_is_the_first_metric():
    from mmengine.config import Config
    from icar_dense.engine.testing import enable_result_dump
    forms = [dict(type='IoUMetric'),
             [dict(type='IoUMetric'), dict(type='CityscapesMetric')],
             dict(type='Evaluator', metrics=dict(type='IoUMetric')),
             dict(metrics=[dict(type='IoUMetric')])]
    for form in forms:
        cfg = enable_result_dump(
            Config(dict(default_scope='mmseg', test_evaluator=form)),
            'out.pkl')
        evaluator = cfg.test_evaluator
        metrics = (evaluator['metrics'] if isinstance(evaluator, dict)
                   else evaluator)
        assert metrics[0] == dict(type='DumpResults', out_file_path='out.pkl')
        assert len(metrics) >= 2


# ----------------------------------------------------------------------------
# 2. two runs, one work dir
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def paused_run(config, tmp_path_factory):
    """Run A: checkpoint after iteration 1, then paused before iteration 2
    (until WORK/go appears, or it is killed)."""
    work = str(tmp_path_factory.mktemp('busy') / 'work')
    proc = start_train(config, work, 'default_hooks.checkpoint.interval=1',
                       'custom_hooks.1.mode=pause', 'custom_hooks.1.iter=2')
    wait_for(osp.join(work, 'paused'), proc)
    yield dict(work=work, proc=proc)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_second_training_run_in_a_busy_work_dir_is_refused(
        config, trained, paused_run):
    """While run A trains, run B in the same work dir is refused naming
    the dir and A (pid, host, start time, command), and writes nothing;
    tools/test.py still works there (its own timestamped folder)."""
    work, first = paused_run['work'], paused_run['proc']
    before = files_under(work)
    for extra in ((), ('--resume', )):
        error, _, _ = tool('train.py', config, '--work-dir', work, *extra)
        assert isinstance(error, locks.WorkDirBusyError), repr(error)
        text = str(error)
        assert f'work dir {work} is in use by another training run' in text
        assert f'pid {first.pid} on host {socket.gethostname()}' in text
        assert 'started 20' in text and 'tools/train.py' in text
        assert '--work-dir' in text
    assert files_under(work) == before  # the refused runs wrote nothing

    error, _, _ = tool('test.py', config, trained['ckpt'], '--work-dir',
                       work)
    assert error is None, repr(error)
    assert len(glob.glob(osp.join(work, '*', 'metrics_test.json'))) == 1
    assert first.poll() is None  # A is still there, unharmed


def test_a_killed_run_leaves_no_stale_lock(config, paused_run):
    """SIGKILL run A: its record stays in the lock file, but the kernel
    dropped the lock, so --resume starts at once and continues A."""
    work, first = paused_run['work'], paused_run['proc']
    os.kill(first.pid, signal.SIGKILL)
    assert finish(first).returncode == -signal.SIGKILL
    with open(osp.join(work, locks.LOCK_NAME)) as f:
        assert json.load(f)['pid'] == first.pid  # the dead run's record
    error, log, _ = tool('train.py', config, '--work-dir', work, '--resume',
                         options=['default_hooks.checkpoint.interval=1'])
    assert error is None, repr(error)
    assert 'iter_1.pth' in log and 'Iter(train) [2/2]' in log
    assert 'Iter(train) [1/2]' not in log
    assert load_checkpoint_file(osp.join(work, 'iter_2.pth'))['meta'][
        'iter'] == 2
    with open(osp.join(work, locks.LOCK_NAME)) as f:
        assert f.read() == ''  # released at the end of the run


def test_resume_of_a_finished_run(config, trained, tmp_path):
    import shutil
    work = str(tmp_path / 'again')
    shutil.copytree(trained['work'], work)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'iter_2.pth'))
    error, log, _ = tool('train.py', config, '--work-dir', work, '--resume',
                         options=['train_cfg.max_iters=4',
                                  'train_cfg.val_interval=4'])
    assert error is None, repr(error)
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [2/4]' not in log
    assert load_checkpoint_file(osp.join(work, 'iter_4.pth'))['meta'][
        'iter'] == 4
    with open(osp.join(work, 'metrics_val.jsonl')) as f:
        assert [json.loads(line)['iter'] for line in f] == [2, 4]


LOCK_SCRIPT = (
    'import importlib.util, sys\n'
    'spec = importlib.util.spec_from_file_location("locks", sys.argv[1])\n'
    'locks = importlib.util.module_from_spec(spec)\n'
    'spec.loader.exec_module(locks)\n'
    'try:\n    locks.hold_work_dir(sys.argv[2])\n'
    'except locks.WorkDirBusyError as err:\n    sys.exit(str(err))\n'
    'print("locked")\n')


def test_lock_in_two_processes_then_released(tmp_path):
    work = str(tmp_path / 'w')
    args = ['python', '-c', LOCK_SCRIPT, locks.__file__, work]
    with locks.WorkDirLock(work):
        other = run_tool(args)
        assert other.returncode == 1
        assert f'pid {os.getpid()} on host' in other.stderr
    other = check_ok(run_tool(args))
    assert other.stdout.strip() == 'locked'


def test_lock_without_file_locking_trusts_live_holders(tmp_path,
                                                       monkeypatch):
    """Where lockf is unsupported (some network file systems): a record of
    a dead pid on this host is stale; a live pid, or another host's record
    refreshed recently, holds the dir."""
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, 'No locks available')

    monkeypatch.setattr(fcntl, 'lockf', no_locks)
    work = tmp_path / 'nfs'
    work.mkdir()
    record = work / locks.LOCK_NAME
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, '-c', 'import os; '
                           'print(os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    cases = [(dict(pid=int(dead), host=host, started=1.0), False),
             (dict(pid=os.getppid(), host=host, started=1.0), True),
             (dict(pid=1, host='other-host', started=1.0,
                   refreshed=time.time()), True),
             (dict(pid=1, host='other-host', started=1.0, refreshed=1.0),
              False)]
    for holder, busy in cases:
        record.write_text(json.dumps(holder))
        lock = locks.WorkDirLock(str(work))
        if busy:
            with pytest.raises(locks.WorkDirBusyError,
                               match=f"pid {holder['pid']} on host "
                               f"{holder['host']}"):
                lock.acquire()
        else:
            lock.acquire()
            assert json.loads(record.read_text())['pid'] == os.getpid()
            lock.release()


# ----------------------------------------------------------------------------
# 4. configs checked before the first iteration
# ----------------------------------------------------------------------------
def _refused(script, config, work, *options, checkpoint=None):
    args = [config] + ([checkpoint] if checkpoint else [])
    err = run_script(script, *args, '--work-dir', work, '--cfg-options',
                     *options)
    assert isinstance(err, ConfigCheckError), repr(err)
    assert isinstance(err, KeyError)
    # nothing was built or written: the work dir was not even created
    assert not osp.exists(work)
    return str(err)


def test_misspelt_checkpoint_option(config, tmp_path):
    text = _refused('train.py', config, str(tmp_path / 'w'),
                    'default_hooks.checkpoint.intervall=1')
    assert ("default_hooks.checkpoint.intervall: SafeCheckpointHook takes "
            "no argument 'intervall' (did you mean 'interval'?)") in text
    assert 'accepts: backend_args, by_epoch,' in text
    assert 'max_keep_ckpts' in text and 'save_best' in text
    assert text.startswith(f'config {config}: 1 unknown')


def test_unknown_arguments_of_hooks_and_loops_all_named(config, tmp_path):
    text = _refused('train.py', config, str(tmp_path / 'w'),
                    'custom_hooks.0.intervall=1',
                    'default_hooks.signal_checkpoint.signal=SIGUSR1',
                    'train_cfg.max_iter=3', 'val_cfg.fp61=True')
    assert "custom_hooks.0.intervall: SaveMetricsHook takes no argument" \
        in text and 'accepts: no arguments' in text
    assert ("default_hooks.signal_checkpoint.signal: SignalCheckpointHook "
            "takes no argument 'signal' (did you mean 'signals'?)") in text
    assert ("train_cfg.max_iter: IterBasedTrainLoop takes no argument "
            "'max_iter' (did you mean 'max_iters'?)") in text
    assert "val_cfg.fp61: ValLoop takes no argument 'fp61' (did you mean " \
        "'fp16'?)" in text
    assert '4 unknown' in text


def test_unknown_optimizer_and_scheduler_arguments(config, tmp_path):
    text = _refused('train.py', config, str(tmp_path / 'w'),
                    'optim_wrapper.clip_grads.max_norm=1',
                    'optim_wrapper.optimizer.moment=0.9',
                    'param_scheduler.0.factr=0.5')
    assert ("optim_wrapper.clip_grads: OptimWrapper takes no argument "
            "'clip_grads' (did you mean 'clip_grad'?)") in text
    assert ("optim_wrapper.optimizer.moment: SGD takes no argument "
            "'moment' (did you mean 'momentum'?)") in text
    assert ("param_scheduler.0.factr: ConstantLR takes no argument 'factr' "
            "(did you mean 'factor'?)") in text


def test_unknown_data_model_and_metric_arguments(config, tmp_path):
    text = _refused('train.py', config, str(tmp_path / 'w'),
                    'train_dataloader.batchsize=2',
                    'train_dataloader.sampler.shufle=False',
                    'train_dataloader.dataset.data_roots=x',
                    'train_dataloader.dataset.pipeline.1.reduce_zero_labl=1',
                    'val_evaluator.iou_metric=[mIoU]',
                    'model.decode_head.dropout_ratioo=0.1',
                    'visualizer.vis_backends.0.save_dri=x')
    for expected in (
            "train_dataloader.batchsize: a dataloader takes no argument "
            "'batchsize' (did you mean 'batch_size'?)",
            "train_dataloader.sampler.shufle: InfiniteSampler takes no "
            "argument 'shufle' (did you mean 'shuffle'?)",
            "train_dataloader.dataset.data_roots: ADE20KDataset takes no "
            "argument 'data_roots' (did you mean 'data_root'?)",
            "train_dataloader.dataset.pipeline.1.reduce_zero_labl: "
            "LoadAnnotations takes no argument 'reduce_zero_labl' (did you "
            "mean 'reduce_zero_label'?)",
            "val_evaluator.iou_metric: IoUMetric takes no argument "
            "'iou_metric' (did you mean 'iou_metrics'?)",
            "model.decode_head.dropout_ratioo: FCNHead takes no argument "
            "'dropout_ratioo' (did you mean 'dropout_ratio'?)",
            "visualizer.vis_backends.0.save_dri: LocalVisBackend takes no "
            "argument 'save_dri'"):
        assert expected in text, text


def test_unknown_component_type_named_with_its_key(config, tmp_path):
    text = _refused('train.py', config, str(tmp_path / 'w'),
                    'default_hooks.checkpoint.type=CheckpointHok',
                    'test_evaluator.type=IoUMetrik')
    assert "default_hooks.checkpoint.type: 'CheckpointHok' is not a " \
        "registered hook type in scope 'mmseg' (did you mean " in text
    assert "'CheckpointHook'" in text
    # the test components of a training config are checked too
    assert "test_evaluator.type: 'IoUMetrik' is not a registered metric " \
        "type" in text and "'IoUMetric'" in text


def test_test_tool_checks_before_loading_anything(config, trained,
                                                  tmp_path):
    text = _refused('test.py', config, str(tmp_path / 'w'),
                    'test_cfg.fp61=True', 'test_evaluator.iou_metric=x',
                    'test_dataloader.dataset.data_prefix.img_pth=x',
                    checkpoint=trained['ckpt'])
    assert "test_cfg.fp61: TestLoop takes no argument 'fp61'" in text
    assert "test_evaluator.iou_metric: IoUMetric" in text
    # training-only components are not the test tool's business
    assert 'train_' not in text and 'optim' not in text
    # a data_prefix key is the dataset's own business (a dict argument)
    assert 'img_pth' not in text


def test_build_failure_names_the_config_key(config, tmp_path):
    """Components are built with the runner's own builders before the first
    iteration; a failure carries a note naming the key."""
    work = str(tmp_path / 'w')
    err = run_script('train.py', config, '--work-dir', work,
                     '--cfg-options',
                     f'val_dataloader.dataset.data_root={tmp_path}/none')
    notes = getattr(err, '__notes__', [])
    assert any('while building val_cfg / val_dataloader / val_evaluator'
               in n and config in n for n in notes), (repr(err), notes)
    assert result_files(work) == []


def test_kwargs_followed_through_the_mro():
    from mmengine.hooks import CheckpointHook, EMAHook, Hook
    from mmengine.optim import AmpOptimWrapper, LinearLR
    names, closed = accepted_arguments(CheckpointHook)
    assert closed and 'interval' in names and 'intervall' not in names
    names, closed = accepted_arguments(LinearLR)  # mixin(**kwargs) -> base
    assert closed and {'optimizer', 'start_factor', 'end', 'by_epoch'} <= \
        names
    names, closed = accepted_arguments(AmpOptimWrapper)
    assert closed and {'loss_scale', 'clip_grad', 'accumulative_counts'} <= \
        names
    names, closed = accepted_arguments(
        EMAHook, dict(ema_type='MomentumAnnealingEMA'), 'mmseg')
    assert closed and {'momentum', 'gamma', 'begin_iter'} <= names

    class KeepsKwargsHook(Hook):

        def __init__(self, size=1, **kwargs):
            self.extra = kwargs

    assert accepted_arguments(KeepsKwargsHook) == ({'size'}, False)


def test_valid_options_pass_the_check(config):
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({
        'optim_wrapper.type': 'AmpOptimWrapper',
        'optim_wrapper.loss_scale': 'dynamic',
        'optim_wrapper.clip_grad': dict(max_norm=1.0),
        'default_hooks.checkpoint.max_keep_ckpts': 2,
        'param_scheduler': [dict(type='LinearLR', start_factor=0.1, end=2,
                                 by_epoch=False)],
        'custom_hooks': [dict(type='EMAHook', momentum=0.001)],
    })
    assert problems_of(cfg, 'train') == []
    assert problems_of(cfg, 'test') == []


def test_public_configs_pass_the_check():
    """No false alarm: every shipped config passes, for training and
    testing (the check reads configs only)."""
    from mmengine.config import Config
    configs = sorted(glob.glob(osp.join(REPO, 'configs', '*', '*.py')))
    configs = [c for c in configs if '_base_' not in c]
    assert len(configs) > 20
    problems = {}
    for path in configs:
        cfg = Config.fromfile(path)
        for mode in ('train', 'test'):
            if mode == 'train' and cfg.get('train_cfg') is None:
                continue
            found = problems_of(cfg, mode)
            if found:
                problems[f'{osp.relpath(path, REPO)} ({mode})'] = found
    assert problems == {}

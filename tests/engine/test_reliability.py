"""Reliability: kill + resume, unsafe checkpoints, distributed failure,
metrics saved before logging.  See docs/guarantees.md."""
import glob
import json
import os
import os.path as osp
import time

import pickle

import pytest
import torch

import icar_dense  # noqa: F401
from helpers_faults import run_script  # also registers the fault hooks
from conftest import REPO, check_ok, free_port, run_tool
from icar_dense.engine import safety
from icar_dense.checkpoint import CheckpointError, load_checkpoint_file

TINY = osp.join(REPO, 'tests', 'configs', 'tiny_seg_fcn.py')
FAULTS_ENV = dict(PYTHONPATH='tests')


def write_config(path, data_root, **extra):
    """tiny_seg_fcn with checkpoints every 2 iters and a FaultHook slot."""
    lines = [
        f'_base_ = [{TINY!r}]',
        "custom_imports = dict(imports=['icar_dense', 'helpers_faults'], "
        'allow_failed_imports=False)',
        # no dropout: the run is a deterministic function of the data order
        'model = dict(decode_head=dict(dropout_ratio=0.0))',
        'train_cfg = dict(max_iters=6, val_interval=6)',
        'default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=1))',
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


def train(config, work, *options, resume=False):
    args = ['python', 'tools/train.py', config, '--work-dir', work]
    if resume:
        args.append('--resume')
    if options:
        args += ['--cfg-options', *options]
    return run_tool(args, env=FAULTS_ENV, timeout=300)


def log_of(proc):
    return proc.stdout + proc.stderr


def model_weights(path):
    return load_checkpoint_file(path)['state_dict']


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6,
                                       msg=lambda m, k=key: f'{k}: {m}')
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope='module')
def fault_config(tiny_ade_root, tmp_path_factory):
    return write_config(
        tmp_path_factory.mktemp('cfg') / 'tiny_faults.py', tiny_ade_root)


@pytest.fixture(scope='module')
def reference_weights(fault_config, tmp_path_factory):
    """An uninterrupted 6-iteration run (in this process, one thread)."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(fault_config)
    cfg.work_dir = str(tmp_path_factory.mktemp('reference'))
    cfg.launcher = 'none'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tools run with OMP_NUM_THREADS=1
    try:
        Runner.from_cfg(cfg).train()
    finally:
        torch.set_num_threads(threads)
    return model_weights(osp.join(cfg.work_dir, 'iter_6.pth'))


# ----------------------------------------------------------------------------
# 1. kill and resume
# ----------------------------------------------------------------------------
def test_sigkill_during_and_after_checkpoint_then_resume_matches(
        fault_config, reference_weights, tmp_path):
    work = str(tmp_path / 'work')
    pointer = osp.join(work, 'last_checkpoint')

    # a) killed while writing iter 4's checkpoint (after iter 2's was kept;
    #    max_keep_ckpts=1 would have deleted it first in stock mmengine)
    proc = train(fault_config, work, 'custom_hooks.1.mode='
                 'kill_during_checkpoint_write', 'custom_hooks.1.iter=4')
    assert proc.returncode == -9, (
        'not killed in the checkpoint writer: does the run use ICARRunner / '
        "SafeCheckpointHook (the 'atomic_local' backend)?\n" +
        log_of(proc)[-3000:])
    assert 'SIGKILL while writing the checkpoint of iteration 4' in \
        proc.stdout
    assert not osp.exists(osp.join(work, 'iter_4.pth'))
    leftovers = glob.glob(osp.join(work, '.iter_4.pth.*.tmp'))
    assert len(leftovers) == 1  # the half-written temporary file
    with open(pointer) as f:
        assert f.read() == osp.join(work, 'iter_2.pth')
    assert load_checkpoint_file(osp.join(work, 'iter_2.pth'))['meta'][
        'iter'] == 2

    # b) resume: continues at iteration 3; killed right after iter 4's
    #    checkpoint was saved
    proc = train(fault_config, work, 'custom_hooks.1.mode='
                 'kill_after_checkpoint', 'custom_hooks.1.iter=4',
                 resume=True)
    log = log_of(proc)
    assert proc.returncode == -9, log[-3000:]
    assert 'resumed' in log.lower() and 'iter_2.pth' in log
    assert 'Iter(train) [3/6]' in log and 'Iter(train) [2/6]' not in log
    assert 'SIGKILL after iteration 4' in proc.stdout
    assert load_checkpoint_file(osp.join(work, 'iter_4.pth'))['meta'][
        'iter'] == 4
    assert not osp.exists(osp.join(work, 'iter_2.pth'))  # rotated after
    assert not glob.glob(osp.join(work, '.*.tmp'))  # the dead run's temp
    with open(pointer) as f:
        assert f.read() == osp.join(work, 'iter_4.pth')

    # c) resume again: iterations 5 and 6, then the same weights as the
    #    uninterrupted run
    proc = check_ok(train(fault_config, work, resume=True))
    log = log_of(proc)
    assert 'iter_4.pth' in log
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [4/6]' not in log
    assert_same_weights(model_weights(osp.join(work, 'iter_6.pth')),
                        reference_weights)


def test_atomic_local_writes_never_leave_partial_files(tmp_path,
                                                       monkeypatch):
    from mmengine.fileio import get_file_backend
    from icar_dense.engine.fileio import (AtomicLocalBackend,
                                          atomic_backend_args)
    args = atomic_backend_args(str(tmp_path))
    assert atomic_backend_args('s3://bucket/work') is None  # not local
    backend = get_file_backend(str(tmp_path), backend_args=args)
    assert isinstance(backend, AtomicLocalBackend)
    target = tmp_path / 'ckpt.pth'
    backend.put(b'old', str(target))
    assert target.read_bytes() == b'old'
    mode = os.stat(target).st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # not mkstemp's 0600

    def crash(fd):
        raise OSError('disk full (injected)')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='injected'):
        backend.put(b'new data', str(target))
    with pytest.raises(OSError, match='injected'):
        backend.put_text('new text', str(tmp_path / 'last'))
    assert target.read_bytes() == b'old'
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pth']  # no temp files


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_find_latest_checkpoint_survives_a_bad_pointer(tmp_path):
    from mmengine.runner import runner as runner_mod
    from icar_dense.engine import runner as icar_runner
    # ICARRunner's --resume uses it; mmengine's own is left as it is
    assert icar_runner.find_latest_checkpoint is safety.find_latest_checkpoint
    assert runner_mod.find_latest_checkpoint.__module__ == \
        'mmengine.runner.checkpoint'
    find = safety.find_latest_checkpoint
    assert find(str(tmp_path)) is None
    for name in ('iter_2.pth', 'iter_10.pth', 'epoch_3.pth', 'best.pth'):
        (tmp_path / name).write_bytes(b'x')
    newest = str(tmp_path / 'iter_10.pth')
    assert find(str(tmp_path)) == newest  # no pointer
    (tmp_path / 'last_checkpoint').write_text('')
    assert find(str(tmp_path)) == newest  # empty pointer
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_12.pth'))
    assert find(str(tmp_path)) == newest  # pointer to a missing file
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert find(str(tmp_path)) == str(tmp_path / 'iter_2.pth')


# ----------------------------------------------------------------------------
# 2. unsafe checkpoints
# ----------------------------------------------------------------------------
class _Payload:
    """Unpickling this creates ``marker``: stands for any code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _evil_checkpoint(path, marker):
    torch.save(dict(meta=dict(iter=1),
                    state_dict={'backbone.stem.0.weight': torch.zeros(1)},
                    payload=_Payload(str(marker))), str(path))
    return str(path)


@pytest.fixture
def evil(tmp_path):
    # the payload is live: a full unpickle runs it
    control_marker = tmp_path / 'control_marker'
    control = _evil_checkpoint(tmp_path / 'control.pth', control_marker)
    torch.load(control, weights_only=False)
    assert control_marker.exists()
    marker = tmp_path / 'pwned'
    return _evil_checkpoint(tmp_path / 'evil.pth', marker), marker


def _assert_refused(err, path):
    text = str(err)
    assert path in text
    assert 'resave_trusted_checkpoint.py' in text


def test_unsafe_pickle_refused_by_every_loader(evil, fault_config, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    from mmengine.runner import CheckpointLoader, load_checkpoint
    from mmseg.registry import MODELS
    from icar_dense.models.backbones import ICARSwinTransformer
    path, marker = evil

    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(path)
    _assert_refused(err.value, path)
    # mmengine's own loader (init_cfg Pretrained of stock models,
    # mmengine.runner.load_checkpoint): torch's weights_only=True with the
    # allow-list of icar_dense.compat; the message is torch's
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(path)
    resnet = MODELS.build(dict(type='ResNetV1c', depth=18, stem_channels=8,
                               base_channels=8))
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(resnet, path)
    resnet = MODELS.build(dict(
        type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
        init_cfg=dict(type='Pretrained', checkpoint=path)))
    with pytest.raises(pickle.UnpicklingError):
        resnet.init_weights()
    swin = ICARSwinTransformer(
        arch=None, embed_dims=8, depths=(1, 1), num_heads=(1, 1),
        window_size=3, out_indices=(0, 1),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError) as err:
        swin.init_weights()
    _assert_refused(err.value, path)
    # load_from and --resume of the configs' runner (ICARRunner)
    for resume in (False, True):
        cfg = Config.fromfile(fault_config)
        cfg.work_dir = str(tmp_path / f'runner_{resume}')
        cfg.load_from, cfg.resume = path, resume
        runner = RUNNERS.build(cfg)
        assert type(runner).__name__ == 'ICARRunner'
        with pytest.raises(CheckpointError) as err:
            runner.load_or_resume()
        _assert_refused(err.value, path)
    assert not marker.exists()


def test_convert_tool_refuses_unsafe_pickle(evil, tmp_path):
    path, marker = evil
    err = run_script('convert_icar.py', path, str(tmp_path / 'out.pth'))
    assert isinstance(err, SystemExit) and err.code != 0
    _assert_refused(err.code, path)
    assert not marker.exists()
    assert not (tmp_path / 'out.pth').exists()


def test_http_checkpoints_load_safely(evil, tmp_path, monkeypatch):
    """Downloads (and torchvision:// / open-mmlab://) use the safe loader;
    mmengine's own download path used ``torch.load(weights_only=False)``."""
    from mmengine.runner import CheckpointLoader
    from mmengine.runner import checkpoint as ckpt_mod
    from icar_dense import compat
    path, marker = evil
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, str(good))
    served = {'https://example.org/models/good.pth': str(good),
              'https://example.org/models/evil.pth': path}

    def fake_download(url, dst, *args, **kwargs):
        with open(served[url], 'rb') as src, open(dst, 'wb') as out:
            out.write(src.read())

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    assert ckpt_mod.load_from_http is compat.load_from_http
    loaded = CheckpointLoader.load_checkpoint(
        'https://example.org/models/good.pth')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    cached = str(tmp_path / 'hub' / 'checkpoints' / 'evil.pth')
    with pytest.raises(CheckpointError) as err:
        CheckpointLoader.load_checkpoint('https://example.org/models/'
                                         'evil.pth')
    _assert_refused(err.value, cached)
    assert not marker.exists()


# ----------------------------------------------------------------------------
# 4. distributed failure
# ----------------------------------------------------------------------------
def test_exception_on_one_rank_ends_the_job(fault_config, tmp_path):
    work = tmp_path / 'dist'
    proc = run_tool(
        ['bash', 'tools/dist_train.sh', fault_config, '2', '--work-dir',
         str(work), '--cfg-options', 'env_cfg.dist_cfg.backend=gloo',
         'custom_hooks.1.mode=raise_on_rank', 'custom_hooks.1.rank=1',
         'custom_hooks.1.iter=2'],
        env=dict(FAULTS_ENV, PORT=free_port()), timeout=240)  # never hangs
    ended = time.time()
    log = log_of(proc)
    assert proc.returncode != 0, log[-3000:]
    assert 'injected failure on rank 1 before iteration 2' in log
    assert 'Iter(train) [2/6]' not in log  # rank 0 did not train on alone
    failed = float((work / 'fault_time').read_text())
    assert ended - failed < 30, \
        f'the job ended {ended - failed:.0f} s after the failure'


# ----------------------------------------------------------------------------
# 5. evaluation results reach the disk before logging
# ----------------------------------------------------------------------------
def test_metrics_written_before_a_logging_crash(fault_config, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    from helpers_faults import CrashingLoggerHook
    cfg = Config.fromfile(fault_config)
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.logger.type = 'CrashingLoggerHook'
    runner = Runner.from_cfg(cfg)
    CrashingLoggerHook.received.clear()
    with pytest.raises(RuntimeError, match='logging failed \\(test\\)'):
        runner.test()
    with open(tmp_path / 'metrics_test.json') as f:
        saved = json.load(f)['metrics']
    assert 'mIoU' in saved
    assert saved == pytest.approx(CrashingLoggerHook.received['test'])

    with pytest.raises(RuntimeError, match='logging failed \\(val\\)'):
        runner.val()
    with open(tmp_path / 'metrics_val.jsonl') as f:
        record = json.loads(f.read().splitlines()[-1])
    assert {k: record[k] for k in CrashingLoggerHook.received['val']} == \
        pytest.approx(CrashingLoggerHook.received['val'])


def test_resave_trusted_checkpoint(tmp_path):
    """tools/resave_trusted_checkpoint.py: what the safe loader refused
    loads afterwards; tensors and arrays kept, the rest listed."""
    import numpy as np
    from helpers_trusted import Meta, Point
    from icar_dense.checkpoint import (CheckpointError,
                                       load_checkpoint_file)
    src, dst = str(tmp_path / 'trusted.pth'), str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict={'w': torch.ones(2)},
                    meta=dict(obj=Meta(), point=Point(1, 2),
                              array=np.arange(3), iter=7,
                              by_tuple={(1, 2): 'x'})), src)
    with pytest.raises(CheckpointError, match='could run code'):
        load_checkpoint_file(src)
    proc = check_ok(run_tool(
        ['python', 'tools/resave_trusted_checkpoint.py', src, dst],
        env=dict(PYTHONPATH=osp.join(REPO, 'tests'))))
    assert 'dropped checkpoint.meta.obj: Meta' in proc.stdout
    assert "dropped checkpoint.meta.by_tuple[(1, 2)]" in proc.stdout
    loaded = load_checkpoint_file(dst)
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert torch.equal(loaded['meta']['array'], torch.arange(3))
    assert loaded['meta']['point'] == (1, 2) and loaded['meta']['iter'] == 7
    assert loaded['meta']['obj'] is None

    missing = run_tool(['python', 'tools/resave_trusted_checkpoint.py',
                        str(tmp_path / 'nope.pth'), dst])
    assert missing.returncode != 0 and 'no such file' in missing.stderr

"""Bad command lines and bad video data through the public entry points.

Issue 15 class 7 (tracebacks that name nothing) for the launchers and
``--cfg-options``, and the README's promise that the public action configs
load videos through ``SafeLoad`` and check list labels against the classes.
Each case asserts the exit code or exception, the message naming the
argument / key / file at fault, and that nothing that looks like a result was
written.
"""
import glob
import os
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch

from conftest import REPO, write_lines
from test_action_pipeline import _load as load_action_config
from test_action_pipeline import action_data  # noqa: F401

CONFIG = osp.join(REPO, 'configs', 'seg', 'icar_swint_upernet_ade20k_160k.py')

pytestmark = pytest.mark.usefixtures('one_thread')


def run_tool(name, args, monkeypatch):
    """``python tools/<name> ARGS`` in this process."""
    monkeypatch.setattr(sys, 'argv', [name] + [str(a) for a in args])
    monkeypatch.setattr(sys, 'path', list(sys.path))
    return runpy.run_path(osp.join(REPO, 'tools', name), run_name='__main__')


# ---------------------------------------------------------------------------
# tools/dist_*.sh: counts checked before torch.distributed.run starts
# ---------------------------------------------------------------------------
@pytest.fixture
def fake_python(tmp_path):
    """A ``PYTHON`` for the launchers that only records that it ran."""
    marker = tmp_path / 'launched'
    script = tmp_path / 'python'
    script.write_text(f'#!/bin/sh\necho "$@" > {marker}\n')
    script.chmod(0o755)
    return str(script), marker


@pytest.mark.parametrize('script, args, env, message', [
    ('dist_train.sh', [CONFIG, '0'], {},
     "NUM_PROCS must be a positive integer (processes to start), got '0'"),
    ('dist_train.sh', [CONFIG, 'two'], {},
     "NUM_PROCS must be a positive integer (processes to start), got 'two'"),
    ('dist_train.sh', ['configs/nope.py', '2'], {},
     "CONFIG 'configs/nope.py' is not a file"),
    ('dist_train.sh', [CONFIG, '2'], {'NODE_RANK': '1'},
     "NODE_RANK must be an integer from 0 to 0 (NNODES=1), got '1'"),
    ('dist_train.sh', [CONFIG, '2'], {'NNODES': '0'},
     "NNODES must be a positive integer"),
    ('dist_test.sh', [CONFIG, 'missing.pth', '2'], {},
     "CHECKPOINT 'missing.pth' is not a file"),
    ('dist_test.sh', [CONFIG, CONFIG, '-1'], {},
     "NUM_PROCS must be a positive integer (processes to start), got '-1'"),
])
def test_launcher_refuses_bad_counts(script, args, env, message, fake_python):
    python, marker = fake_python
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', script), *args],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHON=python, **env))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert f'{script}: ' in proc.stderr  # the launcher says it is the one
    assert not marker.exists()  # torch.distributed.run never started


def test_launcher_passes_good_arguments(fake_python):
    """The checks refuse only what is wrong: a valid call starts the run."""
    python, marker = fake_python
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), CONFIG, '2',
         '--cfg-options', 'a=1'],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHON=python, NNODES='2', NODE_RANK='1'))
    assert proc.returncode == 0, proc.stderr
    launched = marker.read_text()
    assert '--nproc_per_node=2' in launched and '--node_rank=1' in launched
    assert launched.rstrip().endswith('--launcher pytorch --cfg-options a=1')


# ---------------------------------------------------------------------------
# --cfg-options whose key does not fit the config's structure
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('option, message', [
    ('train_dataloader.batch_size.x=2',
     'train_dataloader.batch_size is 2 (int) in the config, not a section '
     'with keys; set it directly: train_dataloader.batch_size=VALUE'),
    ('model.backbone.out_indices.x=1',
     'model.backbone.out_indices is a list of 4 in the config, so its items '
     'are addressed by index'),
    ('train_pipeline.99.scale=1',
     'train_pipeline has 8 items (indices 0 to 7), no item 99'),
    ('model.backbone=swin',
     'model.backbone is a section (type, arch,'),
])
def test_cfg_options_wrong_nesting_named(option, message, tmp_path,
                                         monkeypatch):
    from icar_dense.engine.runtime import ConfigOptionError
    work_dir = tmp_path / 'work'
    with pytest.raises(ConfigOptionError) as err:
        run_tool('train.py', [CONFIG, '--work-dir', work_dir,
                              '--cfg-options', option], monkeypatch)
    assert f'--cfg-options {option.split("=")[0]}' in str(err.value)
    assert message in str(err.value)
    assert not work_dir.exists()


def test_cfg_options_that_fit_still_merge():
    """Index into a list, replace a list, remove a section with None, add a
    key: mmengine's semantics are kept where the structure fits."""
    from mmengine.config import Config
    from icar_dense.engine.runtime import merge_cfg_options
    cfg = Config.fromfile(CONFIG)
    merge_cfg_options(cfg, {
        'train_pipeline.1.scale': (256, 256),
        'model.backbone.out_indices': [2, 3],
        'model.backbone.init_cfg': None,
        'model.decode_head.new_key': 1,
    })
    assert tuple(cfg.train_pipeline[1].scale) == (256, 256)
    assert list(cfg.model.backbone.out_indices) == [2, 3]
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.decode_head.new_key == 1


# ---------------------------------------------------------------------------
# Public Kinetics-400 configs: SafeLoad and label checks as users get them
# ---------------------------------------------------------------------------
def _k400_test(action_data, tmp_path, listing):  # noqa: F811
    """The public K400 fine-tuning config, shrunk, testing ``listing``, with
    a checkpoint of its own model (complete, so only the data is wrong)."""
    from mmaction.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = load_action_config('icar_swint_k400_finetune.py', action_data,
                             str(tmp_path / 'work'))
    cfg.test_dataloader.dataset.ann_file = listing
    init_default_scope('mmaction')
    model = MODELS.build(cfg.model)
    checkpoint = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    config = str(tmp_path / 'k400.py')
    cfg.dump(config)
    return config, checkpoint


def _results_written(tmp_path):
    return [p for p in glob.glob(str(tmp_path / '**' / '*'), recursive=True)
            if osp.basename(p).endswith(('.pkl', '.json')) and
            'vis_data' not in p and osp.getsize(p) > 0]


def test_k400_config_names_an_empty_video(action_data, tmp_path,  # noqa: F811
                                          monkeypatch):
    from icar_dense.datasets.transforms import DataLoadError
    empty = osp.join(action_data['video_dir'], 'zero_bytes.mp4')
    open(empty, 'wb').close()
    listing = write_lines(tmp_path / 'val_list.txt',
                          [f'{action_data["videos"][0]} 3',
                           'zero_bytes.mp4 5'])
    config, checkpoint = _k400_test(action_data, tmp_path, listing)
    with pytest.raises(DataLoadError) as err:
        run_tool('test.py', [config, checkpoint, '--work-dir',
                             tmp_path / 'work', '--out',
                             tmp_path / 'preds.pkl'], monkeypatch)
    assert err.value.path == empty
    assert empty in str(err.value) and 'empty (0 bytes)' in str(err.value)
    assert not osp.exists(tmp_path / 'preds.pkl')
    assert _results_written(tmp_path) == []


def test_k400_config_checks_labels_against_400_classes(
        action_data, tmp_path, monkeypatch):  # noqa: F811
    from icar_dense.datasets.validation import AnnotationError
    listing = write_lines(tmp_path / 'val_list.txt',
                          [f'{action_data["videos"][0]} 3',
                           f'{action_data["videos"][1]} 400'])
    config, checkpoint = _k400_test(action_data, tmp_path, listing)
    with pytest.raises(AnnotationError) as err:
        run_tool('test.py', [config, checkpoint, '--work-dir',
                             tmp_path / 'work'], monkeypatch)
    assert listing in str(err.value) and 'line 2' in str(err.value)
    assert 'num_classes=400' in str(err.value)
    assert _results_written(tmp_path) == []

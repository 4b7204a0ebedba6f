"""``icar_dense.checkpoint``: one package, no hidden mechanisms.

* every public name of the former ``icar_dense.utils.checkpoint`` is in the
  package, and that module is gone (one import path);
* the package imports no model, engine or dataset module (the models import
  it, not the other way round);
* the video backbone's 2D -> 3D inflation computes exactly what mmaction2's
  own ``SwinTransformer3D.inflate_weights`` computes, without replacing
  mmaction's module global ``_load_checkpoint`` (it may even be broken);
* the two models that read iCAR files themselves do it through the one
  mixin.
"""
import ast
import glob
import os.path as osp

import pytest
import torch
from icar_layout import icar_checkpoint
from mmdet.models.backbones import SwinTransformer

import icar_dense  # noqa: F401
import icar_dense.checkpoint as checkpoint

pytestmark = pytest.mark.usefixtures('one_thread')

# the public names of icar_dense/utils/checkpoint.py before issue 17
OLD_NAMES = (
    'AUTHORS_SAFE_GLOBALS', 'CheckpointError', 'ICAR_PREFIXES', 'ICAR_TEXT',
    'ICAR_VISUAL_BACKBONE', 'ICAR_VISUAL_PROJECTOR', 'LEGACY_TEXT_KEYS',
    'REBUILT_UNUSED', 'STAGE_NORM_NOTE', 'backbone_state_dict',
    'classify_checkpoint_keys', 'convert_icar_state_dict',
    'describe_rebuilt_unused', 'detect_layout', 'find_icar_state_dict',
    'fit_icar_checkpoint', 'infer_roberta_config', 'infer_swin_arch',
    'is_authors_training_file', 'keep_model_entry', 'load_checkpoint_file',
    'log_rebuilt_unused', 'maps_icar_itself', 'save_checkpoint_file',
    'split_icar_state_dict', 'stage_norm_keys', 'stage_norm_note',
    'strip_ansi', 'swin_official_to_openmmlab', 'undo_icar_swin_renames',
    'unwrap_state_dict')
TINY = dict(embed_dims=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 4))


def test_every_former_name_has_one_home():
    import importlib.util
    assert set(checkpoint.__all__) >= set(OLD_NAMES)
    for name in OLD_NAMES:
        assert hasattr(checkpoint, name), name
    # no second import path for the same code
    assert importlib.util.find_spec('icar_dense.utils.checkpoint') is None


def test_package_imports_no_higher_layer():
    folder = osp.dirname(checkpoint.__file__)
    for path in glob.glob(osp.join(folder, '*.py')):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or '']
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith('icar_dense'), (path, name)


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    torch.manual_seed(0)
    model = SwinTransformer(**TINY, window_size=3, out_indices=(3, ))
    model.init_weights()
    for name, param in model.named_parameters():
        if 'norm' in name or 'relative_position_bias_table' in name:
            param.data.normal_()
    folder = tmp_path_factory.mktemp('inflation')
    icar = str(folder / 'icar.pth')
    torch.save(icar_checkpoint(model.state_dict(), 3), icar)
    # what mmaction's inflate_weights reads: original Swin names
    sd2d = checkpoint.original_swin_2d(
        checkpoint.load_checkpoint_file(icar)['model'], icar)
    sd2d.pop('pos_embed')
    original = str(folder / 'swin2d.pth')
    torch.save(dict(model=sd2d), original)
    return icar, original


def _video(cls, **kwargs):
    # window 2 in space: the 2D tables (window 3) are resized bicubically
    return cls(arch=dict(TINY), patch_size=(2, 4, 4),
               window_size=(2, 2, 2), drop_path_rate=0., **kwargs)


def test_inflation_equals_mmaction(image_file, monkeypatch):
    # first: its module finishes mmaction's import (compat)
    from icar_dense.models.backbones import ICARSwinTransformer3D
    from mmaction.models.backbones import swin as mmaction_swin  # noqa: I100
    from mmaction.models.backbones.swin import SwinTransformer3D
    from mmengine.logging import MMLogger
    icar, original = image_file
    reference = _video(SwinTransformer3D, pretrained=original)
    SwinTransformer3D.inflate_weights(reference,
                                      MMLogger.get_current_instance())

    def broken(*args, **kwargs):
        raise AssertionError('mmaction reads the file itself')

    monkeypatch.setattr(mmaction_swin, '_load_checkpoint', broken)
    ours = _video(ICARSwinTransformer3D, pretrained=icar)
    ours.init_weights()
    assert mmaction_swin._load_checkpoint is broken
    expected = reference.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)


def test_models_map_icar_files_through_the_mixin():
    from icar_dense.models.heads.action_recognizer import ICARRecognizer3D
    from icar_dense.models.heads.seg_segmentor import ICAREncoderDecoder
    for cls, mapper in ((ICAREncoderDecoder, checkpoint.map_icar_to_segmentor),
                        (ICARRecognizer3D, checkpoint.map_icar_to_recognizer)):
        assert issubclass(cls, checkpoint.ICARCheckpointMixin)
        assert cls.icar_checkpoint_filter is mapper
        assert checkpoint.maps_icar_itself(cls.__new__(cls))
    assert not checkpoint.maps_icar_itself(torch.nn.Linear(1, 1))


def test_load_checkpoint_reads_through_the_safe_loader(tmp_path):
    """mmengine's ``load_checkpoint`` signature, the authors' Namespace
    accepted, a pickle that would run code refused naming the file."""
    import argparse
    source, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    path = str(tmp_path / 'trained.pth')
    torch.save(dict(state_dict={'module.' + k: v for k, v in
                                source.state_dict().items()},
                    args=argparse.Namespace(lr=1e-3)), path)
    loaded = checkpoint.load_checkpoint(target, path, strict=True)
    assert 'args' in loaded
    torch.testing.assert_close(target.weight, source.weight)
    evil = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict=source.state_dict(), bad=tmp_path), evil)
    with pytest.raises(checkpoint.CheckpointError, match='refusing to load'):
        checkpoint.load_checkpoint(target, evil)


def test_write_json_atomic_numbers_and_arrays(tmp_path):
    import json

    import numpy as np
    path = tmp_path / 'results.json'
    path.write_text('old')
    checkpoint.write_json_atomic(
        dict(ap=np.float32(0.5), per_class=np.arange(3),
             loss=torch.tensor(1.25), counts=torch.ones(2)), str(path))
    assert json.loads(path.read_text()) == dict(
        ap=0.5, per_class=[0, 1, 2], loss=1.25, counts=[1.0, 1.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json']

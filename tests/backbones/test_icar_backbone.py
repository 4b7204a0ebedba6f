"""ICARSwinTransformer and the official checkpoint conversion."""
import os.path as osp

import pytest
import torch
from mmdet.models.backbones import SwinTransformer

import icar_dense  # noqa: F401
from icar_dense.checkpoint import (CheckpointError, detect_layout,
                                   infer_swin_arch, load_checkpoint_file)
from icar_dense.models.backbones import ICARSwinTransformer
from conftest import REPO
from icar_layout import icar_checkpoint

TINY = dict(embed_dims=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
            window_size=3)


def _reference():
    torch.manual_seed(0)
    model = SwinTransformer(**TINY, out_indices=(0, 1, 2, 3))
    model.init_weights()
    # non-trivial norms and tables so that a wrong mapping shows
    for name, param in model.named_parameters():
        if 'norm' in name or 'relative_position_bias_table' in name:
            param.data.normal_()
    model.eval()  # mmdet's Swin.train() returns None: no chaining
    return model


def test_arch_presets_and_outputs():
    for arch, widths in (('tiny', [96, 192, 384, 768]),
                         ('base', [128, 256, 512, 1024]),
                         ('large', [192, 384, 768, 1536])):
        model = ICARSwinTransformer(arch=arch)
        assert model.out_channels == widths
    small = ICARSwinTransformer(arch='small')
    assert small.out_channels == [96, 192, 384, 768]
    with pytest.raises(KeyError, match='huge'):
        ICARSwinTransformer(arch='huge')
    model = ICARSwinTransformer(arch=None, **TINY).eval()
    outs = model(torch.rand(1, 3, 48, 48))
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]
    assert [o.shape[-1] for o in outs] == [12, 6, 3, 2]


def test_official_icar_checkpoint_round_trip(tmp_path, capsys):
    import sys
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from convert_icar import convert

    reference = _reference()
    proj = torch.randn(8, 128)
    official = tmp_path / 'icar_official.pth'
    torch.save(icar_checkpoint(reference.state_dict(), 3, proj), official)
    # the authors' file as saved (args: an argparse.Namespace), read safely
    assert detect_layout(load_checkpoint_file(official)['model']) == 'icar'

    converted_path = tmp_path / 'converted.pth'
    converted, meta = convert(str(official), str(converted_path))
    printed = capsys.readouterr().out
    assert '[backbone] matched' in printed and 'unexpected 0' in printed
    # the authors' buffers: rebuilt, not "unexpected"; the norms explained
    rebuilt = [line for line in printed.splitlines()
               if line.startswith('[rebuilt / unused]')]
    assert len(rebuilt) == 1 and 'relative_coords' in rebuilt[0] and \
        'atten_mask_matrix' in rebuilt[0]
    assert '[backbone] norm0, norm1, norm2 initialised' in printed
    assert meta['swin'] == dict(TINY, depths=tuple(TINY['depths']),
                                num_heads=tuple(TINY['num_heads']))
    assert torch.equal(converted['text_classifier.visual_proj.weight'], proj)

    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        expected = reference(x)[3]
        for source in (official, converted_path):
            model = ICARSwinTransformer(
                arch=None, **TINY,
                init_cfg=dict(type='Pretrained', checkpoint=str(source)))
            model.init_weights()
            got = model.eval()(x)[3]
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_openmmlab_checkpoint_with_other_window_is_resized(tmp_path):
    reference = _reference()
    path = tmp_path / 'mm.pth'
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in
                                reference.state_dict().items()}), path)
    model = ICARSwinTransformer(
        arch=None, **dict(TINY, window_size=5),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    table = model.stages[0].blocks[0].attn.w_msa.relative_position_bias_table
    assert table.shape == (81, 1)
    assert infer_swin_arch(model.state_dict())['window_size'] == 5


def test_unknown_layout_and_missing_file_errors(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'model': {'fc.weight': torch.zeros(1)}}, bad)
    model = ICARSwinTransformer(
        arch=None, **TINY, init_cfg=dict(type='Pretrained',
                                         checkpoint=str(bad)))
    with pytest.raises(CheckpointError, match='unknown checkpoint layout'):
        model.init_weights()
    missing = ICARSwinTransformer(
        arch=None, **TINY,
        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'no.pth')))
    with pytest.raises(FileNotFoundError, match='no.pth'):
        missing.init_weights()


def test_init_cfg_errors_name_the_file_and_the_fix(tmp_path):
    reference = _reference()
    official = icar_checkpoint(reference.state_dict(), 3)

    def model(checkpoint, **arch):
        arch = arch or TINY
        return ICARSwinTransformer(
            arch=None, **arch,
            init_cfg=[dict(type='Pretrained', checkpoint=checkpoint)])

    # a one-entry init_cfg list, as mmengine configs often write it
    path = str(tmp_path / 'icar.pth')
    torch.save(official, path)
    model(path).init_weights()

    wider = model(path, **dict(TINY, embed_dims=32))
    with pytest.raises(CheckpointError, match=r'icar\.pth.*do not fit.*arch'):
        wider.init_weights()

    text_only = str(tmp_path / 'text_only.pth')
    torch.save({'model': {'sentence_model.x': torch.zeros(1),
                          'visual_model.projector.weight': torch.zeros(2, 2)}},
               text_only)
    with pytest.raises(CheckpointError,
                       match=r'text_only\.pth: no Swin stage weights'):
        model(text_only).init_weights()

    no_path = ICARSwinTransformer(arch=None, **TINY,
                                  init_cfg=dict(type='Pretrained'))
    with pytest.raises(KeyError, match="no 'checkpoint'"):
        no_path.init_weights()


def test_arch_spellings_match_the_video_backbone():
    for arch in ('t', 'T', 'Tiny'):
        model = ICARSwinTransformer(arch=arch)
        assert model.arch == 'tiny' and model.out_channels[0] == 96


def test_openmmlab_absolute_pos_embed_is_loaded_and_resized(tmp_path):
    """An OpenMMLab Swin trained with use_abs_pos_embed (1, h*w, C): loaded
    as is at its own size, resized for a model of another pre-training
    size; inputs of another grid get it interpolated."""
    torch.manual_seed(0)
    reference = SwinTransformer(**TINY, out_indices=(0, 1, 2, 3),
                                use_abs_pos_embed=True, pretrain_img_size=48)
    reference.init_weights()
    reference.absolute_pos_embed.data.normal_()  # well above trunc .02
    reference.eval()
    path = str(tmp_path / 'mm_abs.pth')
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in
                                reference.state_dict().items()}), path)

    def model(size):
        m = ICARSwinTransformer(
            arch=None, **TINY, use_abs_pos_embed=True, pretrain_img_size=size,
            init_cfg=dict(type='Pretrained', checkpoint=path))
        m.init_weights()
        return m.eval()

    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        # maps 12, 6, 3, 2: no odd block where a map fits the window 3, so
        # mmdet's Swin is the reference here
        torch.testing.assert_close(model(48)(x)[3], reference(x)[3],
                                   rtol=1e-5, atol=1e-5)
        bigger = model(64)
        assert bigger.absolute_pos_embed.shape == (1, 16 * 16, 16)
        assert bigger(torch.rand(1, 3, 40, 56))[0].shape[-2:] == (10, 14)

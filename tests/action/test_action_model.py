"""Video Swin inflated from iCAR, temporal bias interpolation, the video head.

Why the inflation check is exact: mmaction's inflation repeats the 2D patch
kernel over the ``pt`` frames of a temporal patch and divides by ``pt``, and
repeats the 2D relative position bias for every temporal offset.  For a clip
whose frames are all equal every temporal token equals the 2D token, every
key of a 3D window appears once per temporal position with the same logit
(the bias does not depend on dt), so the softmax spreads the same weights
over identical copies: attention, MLP and patch merging give the 2D result
at every time step.  This holds with temporal shifts too (the shift mask
drops whole temporal slices, each still holding every spatial key) but only
if nothing is padded: the frame count must be a multiple of the temporal
patch, the temporal tokens a multiple of the temporal window, and every
stage larger than the spatial window (mmdet's 2D Swin does not shrink a
window to the feature map, mmaction's 3D one does).  Settings below: 8
frames, patch (2, 4, 4), window (2, 2, 2) -> 4 temporal tokens, 2 windows,
shifted by 1 in the second block; 64x64 input -> 16, 8, 4, 2 tokens a side.
"""
import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.runner.checkpoint import load_checkpoint

import icar_dense  # noqa: F401
from icar_dense.models.backbones import ICARSwinTransformer3D
from icar_dense.models.backbones.icar_swin3d import (
    infer_table_window, interpolate_relative_position_bias)
from icar_dense.checkpoint import CheckpointError
from icar_layout import icar_checkpoint

TINY = dict(embed_dims=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 4))


# one torch thread: tests/conftest.py
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def image_model(tmp_path_factory):
    """A 2D Swin with non-trivial weights, saved as an official iCAR file."""
    torch.manual_seed(0)
    model = SwinTransformer(**TINY, window_size=2, out_indices=(3, ))
    model.init_weights()
    for name, param in model.named_parameters():
        if 'norm' in name or 'relative_position_bias_table' in name:
            param.data.normal_()
    model.eval()
    path = str(tmp_path_factory.mktemp('icar') / 'icar_tiny.pth')
    proj = torch.randn(8, 128)
    torch.save(icar_checkpoint(model.state_dict(), 3, proj), path)
    return model, path, proj


def _video_model(**kwargs):
    cfg = dict(
        arch=None,
        **TINY,
        patch_size=(2, 4, 4),
        window_size=(2, 2, 2),
        drop_path_rate=0.)
    cfg.update(kwargs)
    return ICARSwinTransformer3D(**cfg)


def test_inflated_icar_model_equals_image_model_on_static_clip(image_model):
    model2d, path, _ = image_model
    model3d = _video_model(pretrained=path)
    model3d.init_weights()
    model3d.eval()
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 64)
    static = image[:, :, None].repeat(1, 1, 8, 1, 1)
    with torch.no_grad():
        expected = model2d(image)[0]
        got = model3d(static)
    assert got.shape == (1, 128, 4, 2, 2)
    for t in range(4):
        torch.testing.assert_close(
            got[:, :, t], expected, rtol=1e-4, atol=1e-4)
    # the check has teeth: when the second half of the clip changes, the
    # token of frames 2-3 attends to it (shifted temporal windows)
    moving = static.clone()
    moving[:, :, 4:] = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        mixed = model3d(moving)
    assert (mixed[:, :, 1] - expected).abs().max() > 0.1

    # kernel inflation is mmaction's: repeated over time / temporal patch
    patch2d = model2d.patch_embed.projection.weight
    torch.testing.assert_close(model3d.patch_embed.proj.weight,
                               patch2d[:, :, None].repeat(1, 1, 2, 1, 1) / 2)


def test_image_checkpoint_through_load_state_dict(image_model):
    """A 2D state dict loaded at test time is inflated, not rejected."""
    _, path, _ = image_model
    reference = _video_model(pretrained=path)
    reference.init_weights()
    from icar_dense.checkpoint import (load_checkpoint_file,
                                       split_icar_state_dict)
    swin2d = split_icar_state_dict(load_checkpoint_file(path)['model'])['swin']
    model = _video_model()
    model.load_state_dict(swin2d, strict=False)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)


def test_time_interpolation_of_the_bias_table():
    torch.manual_seed(0)
    heads, (wh, ww) = 3, (2, 3)
    space = (2 * wh - 1) * (2 * ww - 1)
    # identity when nothing changes
    table = torch.randn(15 * space, heads)
    assert torch.equal(
        interpolate_relative_position_bias(table, (8, wh, ww), (8, wh, ww)),
        table)
    # a table linear in the temporal offset dt stays linear in the rescaled
    # offset: value(dt') = a * dt' * (Wd_src-1)/(Wd_dst-1) + b
    a, b = torch.randn(space, heads), torch.randn(space, heads)
    dts = torch.arange(-7, 8, dtype=torch.float32)
    linear = (a[None] * dts[:, None, None] + b[None]).reshape(-1, heads)
    for dst, scale in ((4, 7 / 3), (16, 7 / 15)):
        out = interpolate_relative_position_bias(linear, (8, wh, ww),
                                                 (dst, wh, ww))
        new_dts = torch.arange(-(dst - 1), dst, dtype=torch.float32)
        want = (a[None] * (new_dts * scale)[:, None, None] + b[None]).reshape(
            -1, heads)
        assert out.shape == ((2 * dst - 1) * space, heads)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    # window 1 keeps only offset 0
    centre = linear.reshape(15, space, heads)[7]
    torch.testing.assert_close(
        interpolate_relative_position_bias(linear, (8, wh, ww), (1, wh, ww)),
        centre)
    # spatial changes go bicubic on top
    assert interpolate_relative_position_bias(table, (8, wh, ww),
                                              (4, 3, 3)).shape == (7 * 25,
                                                                   heads)
    assert infer_table_window(15 * 9, None, (2, 2)) == (8, 2, 2)
    with pytest.raises(ValueError, match='does not fit'):
        interpolate_relative_position_bias(table, (4, wh, ww), (8, wh, ww))


@pytest.mark.parametrize('window', [4, 16])
def test_window8_checkpoint_into_window4_and_16(window, tmp_path):
    torch.manual_seed(0)
    source = _video_model(window_size=(8, 2, 2))
    source.init_weights()
    for name, param in source.named_parameters():
        if 'relative_position_bias_table' in name:
            param.data.normal_()
    ckpt = str(tmp_path / 'video.pth')
    torch.save(
        dict(state_dict={
            'backbone.' + k: v
            for k, v in source.state_dict().items()
        }), ckpt)
    key = 'layers.1.blocks.1.attn.relative_position_bias_table'
    src_table = source.state_dict()[key].reshape(15, 9, -1)

    # 1) init_cfg Pretrained (training from a video checkpoint)
    by_init = _video_model(
        window_size=(window, 2, 2),
        init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    by_init.init_weights()
    # 2) mmengine's loader, as tools/test.py / load_from use it
    wrapper = torch.nn.Module()
    wrapper.backbone = _video_model(window_size=(window, 2, 2))
    load_checkpoint(wrapper, ckpt, map_location='cpu', strict=True)
    for model in (by_init, wrapper.backbone):
        table = model.state_dict()[key]
        assert table.shape == ((2 * window - 1) * 9, 2)
        table = table.reshape(2 * window - 1, 9, -1)
        # offset 0 and the extreme offsets are kept exactly
        torch.testing.assert_close(table[window - 1], src_table[7])
        torch.testing.assert_close(table[0], src_table[0])
        torch.testing.assert_close(table[-1], src_table[-1])
        index = model.layers[1].blocks[1].attn.relative_position_index
        assert index.shape == (window * 4, window * 4)
        for name, value in source.state_dict().items():
            if 'relative_position' not in name:
                assert torch.equal(model.state_dict()[name], value), name
    wrapper.backbone.eval()
    with torch.no_grad():
        out = wrapper.backbone(torch.randn(1, 3, 2 * window, 32, 32))
    assert out.shape == (1, 128, window, 1, 1)


def test_checkpoint_errors(image_model, tmp_path):
    _, path, _ = image_model
    wide = _video_model(embed_dims=32, pretrained=path)
    with pytest.raises(CheckpointError, match='different Swin width'):
        wide.init_weights()
    converted = tmp_path / 'converted.pth'
    torch.save(
        dict(state_dict={
            'backbone.stages.0.blocks.0.norm1.weight': torch.ones(16)
        }), converted)
    with pytest.raises(CheckpointError, match='OpenMMLab'):
        _video_model(pretrained=str(converted)).init_weights()
    with pytest.raises(KeyError, match='unknown arch'):
        ICARSwinTransformer3D(arch='huge')
    with pytest.raises(ValueError, match='embed_dims'):
        ICARSwinTransformer3D(arch=None, depths=(1, 1))
    assert _video_model().out_channels == [128]


# ----------------------------------------------------------------------------
# the language head
# ----------------------------------------------------------------------------
def _head(tok_dir, vocabulary=('cat', 'dog', 'traffic light'), **kwargs):
    from helpers_text import tiny_roberta_encoder_cfg
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope
    cfg = dict(
        type='ICARVideoHead',
        num_classes=len(vocabulary),
        in_channels=128,
        dropout_ratio=0.5,
        average_clips='prob',
        text_classifier=dict(
            type='TextClassifier',
            embed_dim=16,
            text_encoder=tiny_roberta_encoder_cfg(tok_dir),
            vocabulary=list(vocabulary),
            templates='single'))
    cfg.update(kwargs)
    # a registry builds in the current default scope (what a config's
    # default_scope sets); another test may have left mmdet's
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(cfg)


def test_head_pools_projects_and_caches_prompts(tok_dir):
    from helpers_text import EncodeCounter
    from mmaction.structures import ActionDataSample
    torch.manual_seed(0)
    head = _head(tok_dir).eval()
    clf = head.text_classifier
    assert clf.visual_proj.weight.shape == (16, 128)
    assert clf.visual_proj.bias is None
    feats = torch.randn(6, 128, 2, 3, 3)
    counter = EncodeCounter(clf.text_encoder)
    with torch.no_grad():
        logits = head(feats)
        again = head(feats)
    assert counter.calls == 1  # the eval prompt ensemble is cached
    torch.testing.assert_close(logits, again)
    pooled = feats.mean(dim=(2, 3, 4))
    torch.testing.assert_close(logits, clf(pooled))
    assert logits.abs().max() <= 1 / 0.05 + 1e-4  # cosine / tau
    # 2 videos x 3 views: probabilities averaged as mmaction does
    samples = [ActionDataSample().set_gt_label(0) for _ in range(2)]
    with torch.no_grad():
        out = head.predict(feats, samples)
    want = logits.softmax(-1).view(2, 3, -1).mean(1)
    torch.testing.assert_close(out[1].pred_score, want[1])


def test_head_checks_num_classes_and_swaps_vocabulary(tok_dir):
    with pytest.raises(ValueError, match=r'num_classes=5 .* 3 classes'):
        _head(tok_dir, num_classes=5)
    with pytest.raises(ValueError, match='in_channels=64'):
        _head(
            tok_dir,
            text_classifier=dict(
                type='TextClassifier',
                in_channels=64,
                text_encoder=dict(type='X'),
                vocabulary=['a']))
    head = _head(tok_dir).eval()
    head.set_vocabulary(['cat', 'dog', 'bow (weapon)', 'traffic light'])
    assert head.num_classes == 4
    with torch.no_grad():
        assert head(torch.randn(2, 128, 1, 2, 2)).shape == (2, 4)

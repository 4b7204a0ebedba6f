"""icar_dense registers into the host libraries' registries, scoped."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import icar_dense  # noqa: F401
from icar_dense.registry import register_shared_model

from conftest import REPO  # noqa: E402


@register_shared_model()
class _SharedProbe(torch.nn.Module):

    def __init__(self, width=2):
        super().__init__()
        self.width = width


def _build_in_scope(scope, cfg):
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        init_default_scope(scope)
        return MODELS.build(cfg)


def test_shared_module_visible_in_every_scope():
    from mmaction.registry import MODELS as ACTION
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    for registry in (DET, SEG, ACTION):
        assert registry.get('_SharedProbe') is _SharedProbe
        assert registry.build(dict(type='_SharedProbe', width=3)).width == 3


def test_shared_modules_registered_once_in_the_root_registry():
    """One registration, in mmengine's MODELS: no host scope registers
    one of the names itself, so every scope finds the same class."""
    import icar_dense.action  # noqa: F401
    import icar_dense.det  # noqa: F401
    import icar_dense.seg  # noqa: F401
    from mmaction.registry import MODELS as ACTION
    from mmdet.registry import MODELS as DET
    from mmengine.registry import MODELS as ROOT
    from mmseg.registry import MODELS as SEG
    shared = [name for name, cls in ROOT.module_dict.items()
              if cls.__module__.startswith('icar_dense.')]
    assert {'TextClassifier', 'ICARSwinTransformer',
            'RobertaTextEncoder'} <= set(shared)
    for registry in (DET, SEG, ACTION):
        assert not set(shared) & set(registry.module_dict), registry.scope
        for name in shared:
            assert registry.get(name) is ROOT.get(name)


def test_configs_name_host_modules_next_to_ours():
    """A config importing icar_dense builds stock mmdet/mmseg/mmaction
    models through each library's scope."""
    cfg = Config(
        dict(
            custom_imports=dict(imports=['icar_dense']),
            det=dict(
                type='RetinaNet',
                data_preprocessor=dict(type='DetDataPreprocessor'),
                backbone=dict(type='ResNet', depth=18, base_channels=8,
                              out_indices=(3, )),
                neck=None,
                bbox_head=dict(
                    type='RetinaHead', num_classes=2, in_channels=64,
                    feat_channels=8, stacked_convs=1,
                    anchor_generator=dict(
                        type='AnchorGenerator', octave_base_scale=4,
                        scales_per_octave=1, ratios=[1.0], strides=[32]),
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                    loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                    loss_bbox=dict(type='L1Loss')),
                test_cfg=dict(nms_pre=10, score_thr=0.0, max_per_img=5,
                              nms=dict(type='nms', iou_threshold=0.5))),
            seg=dict(
                type='EncoderDecoder',
                backbone=dict(type='ResNetV1c', depth=18, stem_channels=8,
                              base_channels=8, out_indices=(3, )),
                decode_head=dict(type='FCNHead', in_channels=64, in_index=0,
                                 channels=8, num_classes=3, num_convs=1)),
            action=dict(
                type='Recognizer2D',
                backbone=dict(type='ResNet', depth=18, pretrained=None),
                cls_head=dict(type='TSNHead', num_classes=4,
                              in_channels=512))))
    det = _build_in_scope('mmdet', cfg.det)
    seg = _build_in_scope('mmseg', cfg.seg)
    action = _build_in_scope('mmaction', cfg.action)
    assert type(det).__module__.startswith('mmdet')
    assert type(seg).__module__.startswith('mmseg')
    assert type(action).__module__.startswith('mmaction')
    with torch.no_grad():
        out = seg.eval()(torch.rand(1, 3, 32, 32), mode='tensor')
    assert out.shape[1] == 3


def test_public_configs_import_icar_dense():
    for runtime in ('det', 'seg', 'action'):
        cfg = Config.fromfile(
            osp.join(REPO, f'configs/_base_/default_runtime_{runtime}.py'))
        assert 'icar_dense' in cfg.custom_imports['imports']
        # the safety behaviours: a registered runner named in the config
        assert cfg.runner_type == 'ICARRunner'


def test_icar_runner_config_formats_its_text_once(monkeypatch):
    """ICARRunner's config: mmengine's pretty_text, yapf run once per
    content (the runner reads it four times while it starts)."""
    import copy

    import mmengine.config.config as mmengine_config
    from icar_dense.engine.runner import FormatOnceConfig
    calls = []
    format_code = mmengine_config.FormatCode

    def counted(text, **kwargs):
        calls.append(text)
        return format_code(text, **kwargs)

    monkeypatch.setattr(mmengine_config, 'FormatCode', counted)
    cfg = Config(dict(model=dict(type='M', depths=(1, 2)), lr=0.1,
                      hooks=[dict(type='H', interval=5)]))
    expected = cfg.pretty_text
    once = copy.deepcopy(FormatOnceConfig.of(cfg))
    del calls[:]
    assert once.pretty_text == once.pretty_text == expected
    assert len(calls) == 1
    once.lr = 0.2
    cfg.lr = 0.2
    assert once.pretty_text == cfg.pretty_text != expected
    assert len(calls) == 3

"""ICARCascadeRoIHead: the three cascade stages share one text encoder.

Built from the public cascade config (shrunk): one RoBERTa instead of three
in the modules, the state dict and the parameters; one encoding of the
prompts for all stages; per-stage visual projections and backgrounds; a
stage given another vocabulary encodes its own; checkpoints of the
unshared layout still load; a short train + test runs.
"""
import os
import os.path as osp

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

import icar_dense  # noqa: E402,F401
from conftest import REPO  # noqa: E402
from test_det_configs import shrink  # noqa: E402
from test_det_ov import det_data  # noqa: E402,F401

CONFIG = 'configs/det/icar_swinb_cascade_maskrcnn_coco_3x.py'


def _cfg(data, work_dir, share=True):
    cfg = Config.fromfile(osp.join(REPO, CONFIG))
    cfg = shrink(cfg, data, str(work_dir))
    cfg.model.roi_head.share_text_encoder = share
    return cfg


def _build(cfg):
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def _classifiers(model):
    return [head.text_classifier for head in model.roi_head.bbox_head]


def test_stages_share_one_encoder(det_data, tmp_path):  # noqa: F811
    shared = _build(_cfg(det_data, tmp_path / 's'))
    separate = _build(_cfg(det_data, tmp_path / 'p', share=False))
    first, second, third = _classifiers(shared)
    assert first.text_owner is None
    assert second.text_owner is first and third.text_owner is first
    # one encoder, registered by stage 0 only; the stages borrow its bank
    assert second.bank.text_encoder is first.text_encoder
    assert third.bank.text_encoder is first.text_encoder
    assert second.text_encoder is None and third.text_encoder is None
    # per-stage parts stay per stage
    assert second.visual_proj is not first.visual_proj
    assert second.bg_embed is not first.bg_embed

    encoder_params = sum(p.numel() for p in first.text_encoder.parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate) - count(shared) == 2 * encoder_params
    keys = shared.state_dict().keys()
    for stage in (1, 2):
        prefix = f'roi_head.bbox_head.{stage}.text_classifier.'
        assert not [k for k in keys if k.startswith(prefix + 'text_encoder')]
        assert prefix + 'visual_proj.weight' in keys
    assert any(
        k.startswith('roi_head.bbox_head.0.text_classifier.text_encoder.')
        for k in keys)
    assert 'shared' in repr(second)


def test_prompts_encoded_once_and_vocabulary_kept_per_stage(
        det_data, tmp_path):  # noqa: F811
    model = _build(_cfg(det_data, tmp_path)).eval()
    first, second, third = _classifiers(model)
    calls = []
    encode = first.text_encoder.encode

    def counting(texts):
        calls.append(len(texts))
        return encode(texts)

    first.text_encoder.encode = counting
    embeds = [c.class_embeddings() for c in (first, second, third)]
    assert len(calls) == 1  # stage 0 encodes, stages 1 and 2 reuse it
    # one encoding served to all three: the same values, exactly
    torch.testing.assert_close(embeds[1], embeds[0], rtol=0, atol=0)
    torch.testing.assert_close(embeds[2], embeds[0], rtol=0, atol=0)
    # logits still differ per stage (own projection and background)
    feats = torch.randn(3, first.in_channels)
    assert not torch.allclose(first(feats), second(feats))

    # a stage with its own vocabulary encodes its own prompts
    second.set_vocabulary(['zebra', 'kettle'], descriptions=False)
    own = second.class_embeddings()
    assert own.shape[0] == 2 and len(calls) == 2
    torch.testing.assert_close(first.class_embeddings(), embeds[0])
    assert len(calls) == 2  # stage 0's embeddings still cached


def test_unshared_checkpoint_loads_into_shared_model(det_data, tmp_path):  # noqa: F811,E501
    separate = _build(_cfg(det_data, tmp_path / 'p', share=False))
    shared = _build(_cfg(det_data, tmp_path / 's'))
    state = separate.state_dict()
    missing, unexpected = shared.load_state_dict(state, strict=False)
    assert missing == []
    # only the duplicate encoders of stages 1 and 2 are left over
    assert unexpected and all(
        '.text_classifier.text_encoder.' in k
        and k.startswith(('roi_head.bbox_head.1.', 'roi_head.bbox_head.2.'))
        for k in unexpected)
    for stage in range(3):
        torch.testing.assert_close(
            _classifiers(shared)[stage].visual_proj.weight,
            _classifiers(separate)[stage].visual_proj.weight)


def test_share_refuses_mismatches(det_data):  # noqa: F811
    from icar_dense.models.text import TextClassifier
    from test_det_ov import tiny_text_classifier

    def build(**kwargs):
        cfg = tiny_text_classifier(det_data, ['cat', 'dog'], **kwargs)
        cfg.pop('type')
        return TextClassifier(in_channels=8, **cfg)

    owner = build()
    with pytest.raises(ValueError, match='freeze_text_encoder'):
        build(freeze_text_encoder=False).share(owner)
    borrower = build()
    borrower.share(owner)
    with pytest.raises(ValueError, match='own'):
        build().share(borrower)
    with pytest.raises(TypeError, match='another TextClassifier'):
        owner.share(owner)


def test_shared_cascade_trains_and_tests(det_data, tmp_path):  # noqa: F811
    from mmengine.registry import RUNNERS
    cfg = _cfg(det_data, tmp_path)
    cfg.load_from = None
    runner = RUNNERS.build(cfg)
    runner.train()
    metrics = runner.test()
    assert 'coco/bbox_mAP' in metrics
    model = runner.model
    first, second, _ = _classifiers(model)
    assert second.bank.text_encoder is first.text_encoder
    ckpt = torch.load(osp.join(str(tmp_path), 'epoch_1.pth'),
                      map_location='cpu', weights_only=False)
    assert not [k for k in ckpt['state_dict']
                if k.startswith('roi_head.bbox_head.1.text_classifier.'
                                'text_encoder')]

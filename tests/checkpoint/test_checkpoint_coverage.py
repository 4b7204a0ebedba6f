"""No scoring of random weights (issue 15 class 3; issue 14 leftovers).

``tools/test.py``, ``tools/demo.py`` and ``tools/zeroshot_cls.py`` refuse a
checkpoint that leaves tensors of the model at their initialisation, naming
the file, the first tensors and their count, and write no result;
``--allow-partial-checkpoint`` (or ``allow_partial_checkpoint = True`` in
the config) runs anyway with a warning.  The authors' pre-training file is
mapped onto a detector (backbone + text tower) for ``load_from`` in
training, and refused by ``tools/test.py`` naming the untrained heads.
The 3D backbone's inflation lists rebuilt buffers and ``pos_embed`` in one
"rebuilt / unused" line.
"""
import os
import os.path as osp
import re

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import REPO, run_tool  # noqa: E402
from helpers_seg import make_icar_checkpoint, make_tokenizer  # noqa: E402
from helpers_seg import shrink as shrink_seg  # noqa: E402
from icar_layout import captured_mm_log, icar_checkpoint  # noqa: E402
from mmengine.config import Config  # noqa: E402

import icar_dense  # noqa: E402,F401
from icar_dense.engine.checkpoint_check import (  # noqa: E402
    PARTIAL_FLAG, PartialCheckpointError, enable_checkpoint_check)

pytestmark = pytest.mark.usefixtures('fast_cpu')

ZEROSHOT = 'configs/seg/icar_swint_upernet_ade20k_zeroshot.py'
UPERNET = 'configs/seg/icar_swint_upernet_ade20k_160k.py'
TINY_FCN = osp.join(REPO, 'tests', 'configs', 'tiny_seg_fcn.py')


def _config(name):
    cfg = Config.fromfile(osp.join(REPO, name))
    object.__setattr__(cfg, '_format_python_code', False)
    return cfg


def _build(cfg, scope):
    from mmengine.registry import DefaultScope
    registry = {'mmseg': 'mmseg.registry', 'mmdet': 'mmdet.registry'}[scope]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return models.build(cfg.model)


def _save(path, state_dict, nest=1):
    payload = dict(state_dict)
    for _ in range(nest):
        payload = {'state_dict': payload}
    payload['meta'] = dict(iter=2)
    torch.save(payload, path)
    return str(path)


def _test_tool(config, checkpoint, work, *extra):
    return run_tool(['python', 'tools/test.py', config, checkpoint,
                     '--work-dir', str(work), *extra], timeout=300)


def _results(work):
    """Files under ``work`` that look like a result."""
    found = []
    for root, _, names in os.walk(str(work)):
        found += [n for n in names
                  if n.endswith(('.pkl', 'metrics_test.json', '.json'))]
    return found


def _refused(proc, checkpoint, *names, partial=True):
    """tools/test.py / demo.py failed on the partial checkpoint, naming
    the file and the tensors (first ones and their count), and the flag
    that accepts it (not when nothing of the file fits)."""
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert 'PartialCheckpointError' in log, log[-3000:]
    line = next(line for line in log.splitlines()
                if 'PartialCheckpointError: ' in line)
    assert checkpoint in line, line
    assert re.search(r'\d+ of the \d+ tensors of \w+ are not in the '
                     r'checkpoint', line), line
    for name in names:
        assert name in line, (name, line)
    assert (PARTIAL_FLAG in line) == partial, line
    return line


# ---------------------------------------------------------------------------
# segmentation: tools/test.py and the demo
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def seg(tmp_path_factory, tiny_ade_root):
    root = tmp_path_factory.mktemp('coverage_seg')
    tok = make_tokenizer(str(root / 'tokenizer'))
    icar = make_icar_checkpoint(root / 'icar_authors.pth', tok)
    out = dict(root=root, tok=tok, icar=icar['path'], data=tiny_ade_root)
    for key, name in (('zeroshot', ZEROSHOT), ('upernet', UPERNET)):
        cfg = shrink_seg(_config(name), tiny_ade_root, root / key,
                         icar['path'], tok)
        cfg.log_level = 'INFO'
        out[key] = str(root / f'{key}.py')
        cfg.dump(out[key])
        out[key + '_cfg'] = cfg
    # the zero-shot model's own complete state dict, as our runs save it
    torch.manual_seed(0)
    out['complete_sd'] = _build(out['zeroshot_cfg'], 'mmseg').state_dict()
    return out


def test_complete_checkpoint_is_tested(seg, tmp_path):
    """Control: a checkpoint holding every tensor (what SafeCheckpointHook
    writes) passes the check and writes its metrics."""
    ckpt = _save(tmp_path / 'complete.pth', seg['complete_sd'])
    proc = _test_tool(seg['zeroshot'], ckpt, tmp_path / 'work')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r'all \d+ tensors of ICAREncoderDecoder loaded', log)
    assert osp.isfile(tmp_path / 'work' / 'metrics_test.json')


def test_state_dict_nested_twice_is_refused(seg, tmp_path):
    ckpt = _save(tmp_path / 'nested.pth', seg['complete_sd'], nest=2)
    work = tmp_path / 'work'
    proc = _test_tool(seg['zeroshot'], ckpt, work, '--out',
                      str(tmp_path / 'preds.pkl'))
    line = _refused(proc, ckpt, 'backbone.patch_embed.projection.weight',
                    'nested twice', "has no place for, e.g. ['state_dict']",
                    partial=False)
    assert 'Nothing of the file fits' in line
    assert not _results(work) and not osp.exists(tmp_path / 'preds.pkl')


def test_other_architecture_is_refused_with_the_shapes(seg, tmp_path):
    """Swin twice as wide: every backbone tensor has another shape."""
    cfg = seg['zeroshot_cfg'].copy()
    cfg.model.backbone.embed_dims = 32
    cfg.model.decode_head.update(in_channels=256, channels=256)
    cfg.model.decode_head.text_classifier.in_channels = 256
    wide = _build(cfg, 'mmseg').state_dict()
    ckpt = _save(tmp_path / 'wide.pth', wide)
    proc = _test_tool(seg['zeroshot'], ckpt, tmp_path / 'work')
    line = _refused(proc, ckpt, 'backbone.patch_embed.projection.weight '
                    '(file (32, 3, 4, 4), model (16, 3, 4, 4))',
                    'another shape in the file')
    count = int(re.search(r'(\d+) of the \d+ tensors', line).group(1))
    assert f'and {count - 10} more' in line  # first 10 named
    assert not _results(tmp_path / 'work')


def test_text_tower_of_another_width_is_refused(seg, tmp_path):
    """The authors' file (32-wide RoBERTa) given to a zero-shot config
    whose text tower is 64 wide."""
    proc = _test_tool(
        seg['zeroshot'], seg['icar'], tmp_path / 'work', '--cfg-options',
        'model.decode_head.text_classifier.text_encoder.config.'
        'hidden_size=64')
    _refused(proc, seg['icar'], 'decode_head.text_classifier.text_encoder.'
             'backbone.embeddings.word_embeddings.weight')
    assert not _results(tmp_path / 'work')


def test_mmseg_checkpoint_on_a_zero_shot_config_is_refused(seg, tmp_path):
    fcn = _config(TINY_FCN)
    ckpt = _save(tmp_path / 'mmseg_fcn.pth', _build(fcn, 'mmseg').state_dict())
    proc = _test_tool(seg['zeroshot'], ckpt, tmp_path / 'work')
    line = _refused(proc, ckpt, 'Nothing of the file fits',
                    'keys this model has no place for', partial=False)
    assert not _results(tmp_path / 'work')
    assert 'backbone.stem' in line  # the keys it does have


def test_pretraining_file_on_a_finetuning_config(seg, tmp_path):
    """The authors' file fills the zero-shot model completely (tested in
    test_seg_configs.py); given to the UperNet config it leaves the decoder
    at its initialisation: refused naming it, accepted with
    --allow-partial-checkpoint with a warning."""
    proc = _test_tool(seg['upernet'], seg['icar'], tmp_path / 'work')
    line = _refused(proc, seg['icar'], 'decode_head', 'pre-training',
                    'Fine-tune from it first')
    assert 'decode_head.bottleneck' in line or 'decode_head.psp' in line
    assert 'nested twice' not in line  # {'model': ...} is the layout
    assert not _results(tmp_path / 'work')

    work = tmp_path / 'partial'
    proc = _test_tool(seg['upernet'], seg['icar'], work, PARTIAL_FLAG)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    warning = next(line for line in log.splitlines()
                   if 'going on with them at their initialisation' in line)
    assert 'WARNING' in warning and 'decode_head' in warning
    assert osp.isfile(work / 'metrics_test.json')


def test_config_key_and_flag_set_the_hook():
    """``allow_partial_checkpoint = True`` in a config does what the flag
    does; tools/train.py's hook only reports."""
    hook = dict(type='CheckpointCoverageHook', allow_partial=False,
                report_only=False)
    cfg = Config(dict(custom_hooks=[dict(type='SaveMetricsHook')]))
    enable_checkpoint_check(cfg, 'test')
    assert cfg.custom_hooks == [dict(type='SaveMetricsHook'), hook]
    cfg = Config(dict(allow_partial_checkpoint=True))
    enable_checkpoint_check(cfg, 'test')
    assert cfg.custom_hooks == [dict(hook, allow_partial=True)]
    enable_checkpoint_check(cfg, 'train')  # replaces, does not add
    assert cfg.custom_hooks == [dict(hook, allow_partial=True,
                                     report_only=True)]
    with pytest.raises(ValueError, match='mode'):
        enable_checkpoint_check(cfg, 'val')


def test_seg_demo_refuses_a_partial_checkpoint(seg, tmp_path):
    from data_factory import photo_paths
    image = photo_paths()[0]
    out = str(tmp_path / 'seg.jpg')
    args = ['python', 'tools/demo.py', image, seg['upernet'], seg['icar'],
            '--out-file', out]
    proc = run_tool(args, timeout=300)
    _refused(proc, seg['icar'], 'decode_head', 'pre-training')
    assert not osp.exists(out)
    proc = run_tool(args + [PARTIAL_FLAG], timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert osp.isfile(out)


# ---------------------------------------------------------------------------
# detection: the authors' file is mapped (train) / refused (test, demo)
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def det(tmp_path_factory):
    from test_det_configs import shrink as shrink_det
    from test_det_ov import build_det_data
    root = tmp_path_factory.mktemp('coverage_det')
    data = build_det_data(str(root / 'data'))
    cfg = shrink_det(_config('configs/det/icar_swinb_coco_ov.py'), data,
                     str(root / 'work'))
    cfg.log_level = 'INFO'
    config = str(root / 'tiny_coco_ov.py')
    cfg.dump(config)
    torch.manual_seed(1)
    source = _build(cfg, 'mmdet')
    classifier = source.roi_head.bbox_head.text_classifier
    swin = source.backbone.state_dict()
    text = classifier.text_encoder.state_dict()
    proj = classifier.visual_proj.weight.detach().clone()
    path = str(root / 'icar_authors.pth')
    torch.save(icar_checkpoint(swin, 3, proj, text), path)
    return dict(root=root, data=data, cfg=cfg, config=config, icar=path,
                swin=swin, text=text, proj=proj)


def test_test_tool_refuses_the_pretraining_file_on_a_detector(det,
                                                              tmp_path):
    work = tmp_path / 'work'
    proc = _test_tool(det['config'], det['icar'], work)
    line = _refused(proc, det['icar'], 'neck', 'rpn_head', 'roi_head',
                    'pre-training', 'Fine-tune from it first')
    # the Swin and the text tower were mapped, so they are not listed
    groups = line[line.index('['):line.index(']')]
    assert 'backbone.stages' not in groups and 'text_encoder' not in line
    assert 'mapped its Swin to backbone.*' in proc.stdout + proc.stderr
    assert not _results(work)


def test_load_from_in_training_maps_backbone_and_text(det, tmp_path):
    """tools/train.py's load_from with the authors' file: the Swin and the
    text tower are loaded, one line says what starts at initialisation."""
    from mmengine.registry import RUNNERS
    cfg = det['cfg'].copy()
    cfg.work_dir = str(tmp_path / 'train')
    cfg.model.backbone.init_cfg = None
    cfg.load_from = det['icar']
    enable_checkpoint_check(cfg, 'train')  # as tools/train.py does
    assert cfg.runner_type == 'ICARRunner'  # as tools/train.py builds it
    runner = RUNNERS.build(cfg)
    with captured_mm_log() as messages:
        runner.load_or_resume()  # what Runner.train() calls
    model = runner.model
    for key, value in det['swin'].items():
        if 'relative_position_index' not in key and \
                not key.startswith(('norm0.', 'norm1.', 'norm2.')):
            torch.testing.assert_close(model.backbone.state_dict()[key],
                                       value)
    clf = model.roi_head.bbox_head.text_classifier
    torch.testing.assert_close(clf.visual_proj.weight, det['proj'])
    for key, value in det['text'].items():
        torch.testing.assert_close(clf.text_encoder.state_dict()[key], value)
    summary = [m for m in messages if 'at their initialisation' in m]
    assert len(summary) == 1, messages
    assert det['icar'] in summary[0]
    for name in ('neck', 'rpn_head', 'roi_head', 'backbone.norm0'):
        assert name in summary[0], summary[0]
    rebuilt = [m for m in messages if 'rebuilt / unused' in m]
    assert len(rebuilt) == 1 and 'pos_embed' in rebuilt[0]
    # mmengine's own "missing keys" warning: no rebuilt index buffer
    assert not any('relative_position_index' in m for m in messages)


def test_det_demo_refuses_the_pretraining_file(det, tmp_path):
    from data_factory import photo_paths
    out = str(tmp_path / 'det.jpg')
    proc = run_tool(['python', 'tools/demo.py', photo_paths()[1],
                     det['config'], det['icar'], '--out-file', out],
                    timeout=300)
    _refused(proc, det['icar'], 'roi_head', 'pre-training')
    assert not osp.exists(out)


# ---------------------------------------------------------------------------
# zero-shot classification and video
# ---------------------------------------------------------------------------
def test_zeroshot_cls_refuses_a_file_without_the_visual_projection(
        seg, tmp_path):
    """The authors' file without ``visual_model.projector``: the text
    classifier would project images with a random matrix."""
    import cv2
    from data_factory import load_photo
    from helpers_text import tiny_roberta_encoder_cfg
    raw = torch.load(seg['icar'], weights_only=False)
    del raw['model']['visual_model.projector.weight']
    ckpt = str(tmp_path / 'no_projector.pth')
    torch.save(raw, ckpt)
    data = tmp_path / 'images'
    for cls, photo in (('cat', 1), ('coffee', 2)):
        os.makedirs(data / cls)
        cv2.imwrite(str(data / cls / '0.jpg'), load_photo(photo, (40, 40)))
    encoder = tiny_roberta_encoder_cfg(seg['tok'], embed_dim=256)
    base = osp.join(REPO, 'configs/cls/icar_swint_zeroshot_cls.py')
    cfg = tmp_path / 'zs_cls.py'
    cfg.write_text(f"""
_base_ = [{base!r}]
model = dict(
    backbone=dict(arch=None, embed_dims=16, depths=(1, 2, 1, 1),
                  num_heads=(1, 1, 1, 1), window_size=3),
    text_classifier=dict(
        in_channels=128, embed_dim=256,
        text_encoder=dict(_delete_=True, **{encoder!r}),
        templates='single'))
data = dict(resize=48, crop_size=40, batch_size=2, num_workers=0)
""")
    out = tmp_path / 'zs.json'
    args = ['python', 'tools/zeroshot_cls.py', str(cfg), str(data),
            '--device', 'cpu', '--out', str(out)]
    proc = run_tool(args + ['--checkpoint', seg['icar']], timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert out.exists()
    out.unlink()
    proc = run_tool(args + ['--checkpoint', ckpt], timeout=300)
    line = _refused(proc, ckpt, 'visual_proj.weight', 'TextClassifier')
    assert '1 of the' in line
    assert not out.exists()


def test_video_inflation_logs_rebuilt_buffers_in_one_line(tmp_path):
    """ICARSwinTransformer3D from the authors' file: the file's buffers,
    the rebuilt index buffers and pos_embed in one "rebuilt / unused"
    line; nothing called missing (mmaction's own load result is not
    printed)."""
    from authors_swin_reference import random_authors_swin

    from icar_dense.models.backbones.icar_swin3d import ICARSwinTransformer3D
    tiny = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    model2d = {'visual_model.backbone.' + k: v for k, v in
               random_authors_swin(**tiny, split_size=3, img_size=96,
                                   seed=3).items()}
    path = str(tmp_path / 'icar_2d.pth')
    torch.save(dict(model=model2d, epoch=1), path)
    model = ICARSwinTransformer3D(
        arch=None, embed_dims=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
        patch_size=(2, 4, 4), window_size=(2, 3, 3), out_indices=(3, ),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    with captured_mm_log() as messages:
        model.init_weights()
    rebuilt = [m for m in messages if 'rebuilt / unused' in m]
    assert len(rebuilt) == 1, messages
    for name in ('8 x relative_coords', 'atten_mask_matrix', '1 x pos_embed'):
        assert name in rebuilt[0], (name, rebuilt[0])
    others = [m for m in messages if m not in rebuilt]
    assert not any('relative_position_index' in m or 'pos_embed' in m
                   or '_IncompatibleKeys' in m for m in others), others
    assert any('missing 0: []; unexpected 0: []' in m for m in others)


def test_action_demo_refuses_a_checkpoint_without_the_text_tower(tmp_path):
    """A recognizer checkpoint saved without its (frozen) text tower: the
    demo would classify with a random text tower; it is refused."""
    from helpers_text import build_tokenizer_dir, tiny_roberta_encoder_cfg
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope

    from icar_dense.apis.action_demo import build_recognizer
    tok = build_tokenizer_dir(str(tmp_path / 'tok'), ['a video of cooking'])
    cfg = Config(dict(
        default_scope='mmaction',
        model=dict(
            type='ICARRecognizer3D',
            backbone=dict(
                type='ICARSwinTransformer3D', arch=None, embed_dims=8,
                depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                patch_size=(2, 4, 4), window_size=(2, 3, 3)),
            cls_head=dict(
                type='ICARVideoHead', in_channels=64, num_classes=2,
                text_classifier=dict(
                    type='TextClassifier', in_channels=64, embed_dim=16,
                    text_encoder=tiny_roberta_encoder_cfg(tok, 16),
                    vocabulary=['cooking', 'diving'], templates='single')),
            data_preprocessor=dict(type='ActionDataPreprocessor',
                                   format_shape='NCTHW'))))
    with DefaultScope.overwrite_default_scope('mmaction'):
        state = MODELS.build(cfg.model).state_dict()
    partial = {k: v for k, v in state.items() if '.text_encoder.' not in k}
    ckpt = _save(tmp_path / 'no_text.pth', partial)
    with pytest.raises(PartialCheckpointError) as err:
        build_recognizer(cfg, ckpt)
    message = str(err.value)
    assert ckpt in message and 'cls_head' in message
    assert 'text_encoder.backbone.embeddings.word_embeddings.weight' in \
        message
    model = build_recognizer(cfg, ckpt, allow_partial=True)
    assert type(model).__name__ == 'ICARRecognizer3D'
    full = _save(tmp_path / 'full.pth', state)
    build_recognizer(cfg, full)  # complete: no error

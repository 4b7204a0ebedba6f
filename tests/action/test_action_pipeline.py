"""Action configs end to end on tiny real videos, on the CPU.

The videos are encoded with OpenCV (mp4v .mp4 and MJPG .avi) from a crop
moving over real photographs (scikit-image / scikit-learn data), listed in
the Kinetics ``path label`` format and decoded by mmaction's decord and
OpenCV loaders.  Every public config in configs/action/ is loaded as users
get it, then shrunk (tiny Swin3D, tiny RoBERTa with a real byte-level BPE
tokenizer, 4 frames of 32x32) and trained for 2 iterations and/or tested,
in-process as tools/train.py and tools/test.py run them.
"""
import json
import os
import os.path as osp
import uuid

import cv2
import numpy as np
import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.config import Config
from mmengine.registry import RUNNERS

import icar_dense  # noqa: F401
from data_factory import load_photo, pipeline_steps
from helpers_text import (build_tokenizer_dir, tiny_roberta_config,
                          tokenizer_size)
from icar_layout import captured_mm_log, icar_checkpoint

from conftest import REPO, write_lines  # noqa: E402
CONFIG_DIR = osp.join(REPO, 'configs', 'action')

VIDEO_SIZE = (64, 48)  # decord needs widths that are multiples of 32
NUM_FRAMES = 16
NUM_VIDEOS = 8
TINY_SWIN = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2))
WIDTH, EMBED = 128, 16
K400_LABELS = [0, 5, 10, 50, 100, 200]  # classes of the tiny K400 videos
UCF_NAMES = [
    'apply eye makeup', 'biking: riding a bicycle', 'diving', 'juggling balls'
]
HMDB_NAMES = ['brush hair', 'cartwheel', 'climb', 'dive']
K600_NAMES = [
    'abseiling', 'adjusting glasses', 'alligator wrestling',
    'archaeological excavation', 'arguing', 'assembling bicycle'
]
K600_SPLITS = [['adjusting glasses', 'arguing', 'alligator wrestling'],
               [
                   'assembling bicycle', 'adjusting glasses',
                   'archaeological excavation'
               ]]


def _k400_names():
    from icar_dense.models.text import load_vocabulary
    return load_vocabulary('kinetics400').names


def _write_video(path, photo, fourcc):
    """16 frames of a 64x48 crop moving over a real photograph."""
    image = load_photo(photo, (128, 96))
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 8,
                             VIDEO_SIZE)
    assert writer.isOpened(), f'OpenCV cannot write {fourcc} to {path}'
    frames = []
    for t in range(NUM_FRAMES):
        crop = np.ascontiguousarray(image[2 * t:2 * t + 48, 4 * t:4 * t + 64])
        writer.write(crop)
        frames.append(crop)
    writer.release()
    return np.stack(frames)  # BGR, as written


# one torch thread: tests/conftest.py
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def action_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('action'))
    video_dir = osp.join(root, 'videos')
    os.makedirs(video_dir)
    videos, frames = [], {}
    for i in range(NUM_VIDEOS):
        fourcc, ext = ('mp4v', 'mp4') if i % 2 == 0 else ('MJPG', 'avi')
        name = f'clip_{i:02d}.{ext}'
        frames[name] = _write_video(osp.join(video_dir, name), i, fourcc)
        videos.append(name)
    data = dict(root=root, video_dir=video_dir, videos=videos, frames=frames)
    # Kinetics-400 lists: path label (labels index the 400 K400 names)
    data['k400_train'] = write_lines(
        osp.join(root, 'kinetics400_train_list_videos.txt'),
        [f'{v} {K400_LABELS[i]}' for i, v in enumerate(videos[:4])])
    data['k400_val'] = write_lines(
        osp.join(root, 'kinetics400_val_list_videos.txt'),
        [f'{v} {K400_LABELS[4 + i]}' for i, v in enumerate(videos[4:6])])
    # UCF101 / HMDB51 style: a class-name file and one list per split
    for key, names in (('ucf', UCF_NAMES), ('hmdb', HMDB_NAMES)):
        data[f'{key}_names'] = write_lines(
            osp.join(root, f'{key}_classnames.txt'), names)
        data[f'{key}_splits'] = [
            write_lines(
                osp.join(root, f'{key}_val_split_1_videos.txt'),
                [f'{v} {i}' for i, v in enumerate(videos[:4])]),
            write_lines(
                osp.join(root, f'{key}_val_split_2_videos.txt'),
                [f'{v} {3 - i}' for i, v in enumerate(videos[4:])]),
        ]
    # Kinetics-600 style: one list over 6 classes, class subsets per split
    data['k600_names'] = write_lines(
        osp.join(root, 'k600_classnames.txt'), K600_NAMES)
    data['k600_list'] = write_lines(
        osp.join(root, 'k600_val_list_videos.txt'),
        [f'{v} {i % 6}' for i, v in enumerate(videos)])
    data['k600_splits'] = [
        write_lines(osp.join(root, f'k600_novel_split{i + 1}.txt'), names)
        for i, names in enumerate(K600_SPLITS)
    ]
    # a real byte-level BPE tokenizer and a tiny RoBERTa
    prompts = [
        f'a photo of {n}.'
        for n in _k400_names() + UCF_NAMES + HMDB_NAMES + K600_NAMES
    ]
    data['tok'] = build_tokenizer_dir(osp.join(root, 'tok'), prompts)
    data['roberta'] = tiny_roberta_config(tokenizer_size(data['tok']))
    # an official-layout iCAR checkpoint of the tiny model
    from icar_dense.models.text import RobertaTextEncoder
    torch.manual_seed(0)
    swin = SwinTransformer(**TINY_SWIN, window_size=2, out_indices=(3, ))
    swin.init_weights()
    text = RobertaTextEncoder(
        config=data['roberta'], tokenizer=data['tok'], embed_dim=EMBED)
    data['swin2d'] = {k: v.clone() for k, v in swin.state_dict().items()}
    data['text_sd'] = {k: v.clone() for k, v in text.state_dict().items()}
    data['visual_proj'] = torch.randn(EMBED, WIDTH) * 0.1
    data['icar'] = osp.join(root, 'icar_tiny.pth')
    torch.save(
        icar_checkpoint(data['swin2d'], 3, data['visual_proj'],
                        data['text_sd']), data['icar'])
    return data


# ----------------------------------------------------------------------------
# shrinking the public configs
# ----------------------------------------------------------------------------
_SIZES = {256: 40, 224: 32}


def _shrink_transform(step):
    kind = step.get('type')
    if kind == 'SampleFrames':
        step['clip_len'] = 4
        step['frame_interval'] = 1
        step['num_clips'] = min(step.get('num_clips', 1), 2)
    elif kind == 'Resize':
        step['scale'] = tuple(_SIZES.get(s, s) for s in step['scale'])
    elif kind in ('CenterCrop', 'ThreeCrop'):
        step['crop_size'] = _SIZES.get(step['crop_size'], step['crop_size'])


def _shrink_pipelines(node):
    if isinstance(node, dict):
        if node.get('type') is not None:
            _shrink_transform(node)
        for value in node.values():
            _shrink_pipelines(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _shrink_pipelines(value)


def _shrink(cfg, data, work_dir):
    cfg.work_dir = work_dir
    cfg.experiment_name = f'test_{uuid.uuid4().hex[:8]}'
    cfg.launcher = 'none'
    backbone = cfg.model.backbone
    backbone.update(
        arch=None, **TINY_SWIN, window_size=(2, 2, 2), drop_path_rate=0.)
    if backbone.get('pretrained'):
        backbone.pretrained = data['icar']
    head = cfg.model.cls_head
    head.in_channels = WIDTH
    clf = head.text_classifier
    clf.update(in_channels=WIDTH, embed_dim=EMBED)
    clf.text_encoder = dict(
        type='RobertaTextEncoder',
        model=None,
        config=data['roberta'],
        tokenizer=data['tok'],
        max_length=16,
        embed_dim=EMBED)
    if clf.get('init_cfg'):
        clf.init_cfg.checkpoint = data['icar']
    _shrink_pipelines(cfg._cfg_dict)
    for name, batch in (('train_dataloader', 2), ('val_dataloader', 1),
                        ('test_dataloader', 1)):
        loader = cfg.get(name)
        if not loader:
            continue
        loader.update(
            batch_size=batch, num_workers=0, persistent_workers=False)
        dataset = loader.dataset
        dataset.data_prefix = dict(video=data['video_dir'])
        # mmengine runs gc.collect() to serialize a dataset: slow in a big
        # test process, pointless for 4 videos
        dataset.serialize_data = False
        if dataset.type in ('VideoDataset', 'ValidatedVideoDataset'):
            dataset.ann_file = data['k400_train' if name ==
                                    'train_dataloader' else 'k400_val']
    cfg.default_hooks.logger.interval = 1
    if cfg.get('train_cfg'):
        cfg.train_cfg.max_epochs = 1
    return cfg


def _zeroshot_splits(cfg, data, kind):
    """Point a multi-split config at the tiny data (two splits)."""
    dataset = cfg.test_dataloader.dataset
    if kind == 'k600novel':
        dataset.update(
            ann_file=data['k600_list'], label_names=data['k600_names'])
        cfg.test_cfg.splits = [
            dict(name=f'split{i + 1}', classes=path)
            for i, path in enumerate(data['k600_splits'])
        ]
    else:
        key = 'ucf' if kind == 'ucf101' else 'hmdb'
        dataset.update(label_names=data[f'{key}_names'])
        cfg.test_cfg.splits = [
            dict(name=f'split{i + 1}', ann_file=path)
            for i, path in enumerate(data[f'{key}_splits'])
        ]
    return cfg


def _load(name, data, work_dir):
    return _shrink(Config.fromfile(osp.join(CONFIG_DIR, name)), data, work_dir)


# ----------------------------------------------------------------------------
def test_videos_decode_with_decord_and_opencv(action_data):
    from mmaction.datasets import VideoDataset
    from mmaction.datasets.transforms import (DecordDecode, DecordInit,
                                              OpenCVDecode, OpenCVInit,
                                              SampleFrames)
    sample = SampleFrames(
        clip_len=4, frame_interval=3, num_clips=1, test_mode=True)
    for name in action_data['videos'][:2]:  # one mp4v .mp4, one MJPG .avi
        decoded = {}
        for backend, init, decode in (('decord', DecordInit(), DecordDecode()),
                                      ('opencv', OpenCVInit(),
                                       OpenCVDecode())):
            results = dict(
                filename=osp.join(action_data['video_dir'], name),
                label=-1,
                start_index=0,
                modality='RGB')
            results = decode(sample(init(results)))
            assert results['total_frames'] == NUM_FRAMES, backend
            imgs = np.stack(results['imgs']).astype(np.float32)
            assert imgs.shape == (4, 48, 64, 3), backend
            source = action_data['frames'][name][results['frame_inds']]
            source = source[..., ::-1].astype(np.float32)  # BGR -> RGB
            error = np.abs(imgs - source).mean()
            assert error < 8, f'{backend} {name}: mean error {error:.1f}'
            decoded[backend] = imgs
        assert np.abs(decoded['decord'] - decoded['opencv']).mean() < 4
        # the content moves: sampled frames differ
        assert np.abs(decoded['decord'][0] - decoded['decord'][-1]).mean() > 5
    dataset = VideoDataset(
        action_data['k400_train'],
        pipeline=[],
        data_prefix=dict(video=action_data['video_dir']))
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert [d['label'] for d in infos] == K400_LABELS[:4]
    assert infos[1]['filename'].endswith('clip_01.avi')


def test_public_configs_as_users_get_them():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'icar_swinb_k400_finetune.py'))
    assert cfg.model.backbone.arch == 'base'
    assert cfg.model.backbone.window_size == (8, 7, 7)
    assert cfg.model.cls_head.in_channels == 1024
    assert cfg.model.cls_head.text_classifier.tau == 0.05
    train = {s.type: s for s in pipeline_steps(cfg.train_pipeline)}
    sample = train['SampleFrames']
    assert (sample.clip_len, sample.frame_interval) == (32, 2)
    test = {s.type: s for s in pipeline_steps(cfg.test_pipeline)}
    assert test['SampleFrames'].num_clips == 4
    assert test['ThreeCrop'].crop_size == 224
    # decoding fails naming the video (SafeLoad); labels checked against 400
    for pipeline in (cfg.train_pipeline, cfg.val_pipeline, cfg.test_pipeline):
        assert pipeline[0].type == 'SafeLoad'
        assert [t.type for t in pipeline[0].transforms] == [
            'DecordInit', 'SampleFrames', 'DecordDecode']
    assert cfg.train_dataloader.dataset.type == 'ValidatedVideoDataset'
    assert cfg.test_dataloader.dataset.num_classes == 400
    assert cfg.train_dataloader.dataset.ann_file.endswith(
        'kinetics400_train_list_videos.txt')
    optim = cfg.optim_wrapper
    assert (optim.optimizer.type, optim.optimizer.lr) == ('AdamW', 3e-4)
    assert optim.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    # the authors' video prompts; their recipe trains the text tower
    clf_cfg = cfg.model.cls_head.text_classifier
    assert clf_cfg.templates == 'kinetics28'
    assert clf_cfg.freeze_text_encoder is False
    assert [s.type
            for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    assert cfg.train_cfg.max_epochs == 30
    assert cfg.test_evaluator.type == 'AccMetric'
    tiny = Config.fromfile(osp.join(CONFIG_DIR, 'icar_swint_k400_finetune.py'))
    assert tiny.model.backbone.arch == 'tiny'
    assert tiny.model.backbone.pretrained.endswith('icar_swint.pth')
    assert tiny.model.cls_head.text_classifier.in_channels == 768
    zs = Config.fromfile(osp.join(CONFIG_DIR, 'icar_swinb_k400_zeroshot.py'))
    assert zs.model.data_preprocessor.mean == [123.2524, 117.2038, 104.5019]
    assert zs.train_dataloader is None
    for kind in ('ucf101', 'hmdb51', 'k600novel'):
        split_cfg = Config.fromfile(
            osp.join(CONFIG_DIR, f'icar_swinb_{kind}_zeroshot.py'))
        assert split_cfg.test_cfg.type == 'MultiSplitTestLoop'
        assert len(split_cfg.test_cfg.splits) == 3
    # the full-size Video Swin-B of the config builds as-is
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        backbone = MODELS.build(cfg.model.backbone)
    assert backbone.out_channels == [1024]
    assert sum(p.numel() for p in backbone.parameters()) > 80e6


@pytest.fixture(scope='module')
def finetuned(action_data, tmp_path_factory):
    """Train the shrunk K400 fine-tuning config for 2 iterations."""
    work = str(tmp_path_factory.mktemp('finetune'))
    cfg = _load('icar_swinb_k400_finetune.py', action_data, work)
    runner = RUNNERS.build(cfg)
    runner.train()
    return runner, work


def test_finetune_trains_validates_and_tests(finetuned, action_data, tmp_path):
    runner, work = finetuned
    assert runner.iter == 2  # 4 videos, batch 2, one epoch
    ckpt = osp.join(work, 'epoch_1.pth')
    state = torch.load(ckpt, weights_only=True)['state_dict']
    # initialised from the iCAR file: inflated kernel, its text tower and
    # visual projection (2 AdamW steps at warm-up lr: each moves a weight by
    # at most ~lr, 3e-5 + 1e-4 for the head, a tenth for the backbone)
    kernel = action_data['swin2d']['patch_embed.projection.weight']
    torch.testing.assert_close(
        state['backbone.patch_embed.proj.weight'],
        kernel[:, :, None].repeat(1, 1, 2, 1, 1) / 2,
        atol=5e-5,
        rtol=0)
    prefix = 'cls_head.text_classifier.'
    torch.testing.assert_close(
        state[prefix + 'visual_proj.weight'],
        action_data['visual_proj'],
        atol=5e-4,
        rtol=0)
    # the text tower trains (the authors' recipe), at the backbone's lr: 2
    # steps of at most ~3e-6 + 1e-5 each (the head's lr would move 1e-4)
    key = 'backbone.encoder.layer.0.attention.self.query.weight'
    trained = state[prefix + 'text_encoder.' + key]
    assert not torch.equal(trained, action_data['text_sd'][key])
    torch.testing.assert_close(
        trained, action_data['text_sd'][key], atol=2e-5, rtol=0)
    # backbone lr (Swin and RoBERTa) = 0.1 x head lr
    groups = runner.optim_wrapper.optimizer.param_groups
    model = runner.model
    lr = {id(p): g['lr'] for g in groups for p in g['params']}
    clf = model.cls_head.text_classifier
    head_lr = lr[id(clf.visual_proj.weight)]
    assert lr[id(model.backbone.patch_embed.proj.weight)] == pytest.approx(
        0.1 * head_lr)
    query = clf.text_encoder.backbone.encoder.layer[0].attention.self.query
    assert lr[id(query.weight)] == pytest.approx(0.1 * head_lr)
    assert lr[id(clf.text_encoder.projector.weight)] == pytest.approx(head_lr)
    with open(osp.join(work, 'metrics_val.jsonl')) as f:
        val = [json.loads(line) for line in f]
    assert 'acc/top1' in val[-1]

    cfg = _load('icar_swinb_k400_finetune.py', action_data, str(tmp_path))
    cfg.load_from = ckpt
    metrics = RUNNERS.build(cfg).test()
    for key in ('acc/top1', 'acc/top5', 'acc/mean1'):
        assert 0 <= metrics[key] <= 1
    with open(osp.join(str(tmp_path), 'metrics_test.json')) as f:
        assert json.load(f)['metrics']['acc/top1'] == metrics['acc/top1']


def test_swint_finetune_config_trains(action_data, tmp_path):
    cfg = _load('icar_swint_k400_finetune.py', action_data, str(tmp_path))
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = RUNNERS.build(cfg)
    runner.train()
    assert runner.iter == 2
    cfg.load_from = osp.join(str(tmp_path), 'epoch_1.pth')
    assert 'acc/top1' in RUNNERS.build(cfg).test()


@pytest.mark.parametrize('arch', ['swinb', 'swint'])
def test_k400_zeroshot_from_official_icar_file(arch, action_data, tmp_path):
    cfg = _load(f'icar_{arch}_k400_zeroshot.py', action_data, str(tmp_path))
    cfg.load_from = action_data['icar']  # tools/test.py CONFIG ICAR_FILE
    runner = RUNNERS.build(cfg)
    with captured_mm_log() as messages:
        metrics = runner.test()
    assert 'acc/top1' in metrics
    # the authors' file as saved: training state skipped, buffers and
    # unused weights in one line, none of them missing / unexpected
    assert sum("using its 'model' entry" in m for m in messages) == 1
    rebuilt = [m for m in messages if 'rebuilt / unused' in m]
    assert len(rebuilt) == 1
    for name in ('relative_coords', 'atten_mask_matrix', 'pos_embed',
                 'position_ids', 'pooler'):
        assert name in rebuilt[0], (name, rebuilt[0])
    for message in messages:
        if 'unexpected' in message or 'missing' in message:
            for name in ('atten_mask_matrix', 'relative_coords', 'pos_embed',
                         'pooler', 'position_ids', 'args'):
                assert name not in message, (name, message)
    model = runner.model
    kernel = action_data['swin2d']['patch_embed.projection.weight']
    torch.testing.assert_close(model.backbone.patch_embed.proj.weight,
                               kernel[:, :, None].repeat(1, 1, 2, 1, 1) / 2)
    clf = model.cls_head.text_classifier
    assert torch.equal(clf.visual_proj.weight, action_data['visual_proj'])
    assert torch.equal(clf.text_encoder.projector.weight,
                       action_data['text_sd']['projector.weight'])
    assert clf.num_classes == 400


@pytest.mark.parametrize('kind', ['ucf101', 'hmdb51', 'k600novel'])
@pytest.mark.parametrize('arch', ['swinb', 'swint'])
def test_zeroshot_split_configs(arch, kind, finetuned, action_data, tmp_path):
    _, work = finetuned
    cfg = _load(f'icar_{arch}_{kind}_zeroshot.py', action_data, str(tmp_path))
    _zeroshot_splits(cfg, action_data, kind)
    cfg.load_from = osp.join(work, 'epoch_1.pth')
    runner = RUNNERS.build(cfg)
    metrics = runner.test()
    with open(osp.join(str(tmp_path), 'zeroshot_splits.json')) as f:
        saved = json.load(f)
    assert list(saved['splits']) == ['split1', 'split2']
    top1 = [saved['splits'][s]['acc/top1'] for s in ('split1', 'split2')]
    assert saved['mean']['acc/top1'] == pytest.approx(np.mean(top1))
    assert saved['std']['acc/top1'] == pytest.approx(np.std(top1))
    assert metrics['acc/top1_mean'] == pytest.approx(np.mean(top1))
    assert metrics['split2/acc/top1'] == top1[1]
    # the model was left with the last split's classes
    names = runner.model.cls_head.class_names
    if kind == 'k600novel':
        assert names == K600_SPLITS[1]
    else:
        assert len(names) == 4 and names[0] in ('apply eye makeup',
                                                'brush hair')


@pytest.mark.parametrize('kind', ['ucf101', 'hmdb51', 'k600novel'])
@pytest.mark.parametrize('arch', ['swinb', 'swint'])
def test_authors_protocol_configs(arch, kind, finetuned, action_data,
                                  tmp_path):
    """One evaluation: UCF101 / HMDB51 split 1, Kinetics-600 classes not in
    Kinetics-400 (computed from the class lists)."""
    _, work = finetuned
    name = (f'icar_{arch}_k600novel_zeroshot_authors.py' if kind ==
            'k600novel' else f'icar_{arch}_{kind}_zeroshot_split1.py')
    cfg = _load(name, action_data, str(tmp_path))
    dataset = cfg.test_dataloader.dataset
    if kind == 'k600novel':
        dataset.update(
            ann_file=action_data['k600_list'],
            label_names=action_data['k600_names'])
        want = [n for n in K600_NAMES if n not in _k400_names()]
        assert want == K600_NAMES[1:]  # 'abseiling' is a K400 class
    else:
        key = 'ucf' if kind == 'ucf101' else 'hmdb'
        dataset.label_names = action_data[f'{key}_names']
        cfg.test_cfg.splits[0].ann_file = action_data[f'{key}_splits'][0]
        want = UCF_NAMES if kind == 'ucf101' else HMDB_NAMES
    assert len(cfg.test_cfg.splits) == 1
    cfg.load_from = osp.join(work, 'epoch_1.pth')
    runner = RUNNERS.build(cfg)
    metrics = runner.test()
    assert runner.model.cls_head.class_names == [
        n.split(':')[0] for n in want
    ]
    assert 0 <= metrics['acc/top1'] <= 1
    assert not [k for k in metrics if k.endswith(('_mean', '_std'))]
    split = cfg.test_cfg.splits[0].name
    assert metrics[f'{split}/acc/top1'] == metrics['acc/top1']
    with open(osp.join(str(tmp_path), 'zeroshot_splits.json')) as f:
        saved = json.load(f)
    assert saved['metrics']['acc/top1'] == metrics['acc/top1']
    assert list(saved['splits']) == [split] and 'std' not in saved
    if kind == 'k600novel':  # the abseiling videos (label 0) are left out
        assert len(runner.test_dataloader.dataset) == sum(
            i % 6 != 0 for i in range(NUM_VIDEOS))


def test_split_result_equals_a_single_split_run(finetuned, action_data,
                                                tmp_path):
    """The loop's split 2 == tools/test.py --vocabulary on split 2 alone."""
    from icar_dense.engine.testing import use_vocabulary
    _, work = finetuned
    ckpt = osp.join(work, 'epoch_1.pth')
    multi = _load('icar_swinb_k600novel_zeroshot.py', action_data,
                  str(tmp_path / 'multi'))
    _zeroshot_splits(multi, action_data, 'k600novel')
    multi.load_from = ckpt
    metrics = RUNNERS.build(multi).test()

    single = _load('icar_swinb_k600novel_zeroshot.py', action_data,
                   str(tmp_path / 'single'))
    _zeroshot_splits(single, action_data, 'k600novel')
    single.test_dataloader.dataset.classes = action_data['k600_splits'][1]
    single.test_cfg = dict(type='TestLoop')
    use_vocabulary(single, action_data['k600_splits'][1])
    single.load_from = ckpt
    alone = RUNNERS.build(single).test()
    for key in ('acc/top1', 'acc/top5', 'acc/mean1'):
        assert metrics[f'split2/{key}'] == pytest.approx(alone[key])


def test_zeroshot_dataset_errors(action_data):
    from icar_dense.datasets import ZeroShotVideoDataset
    with pytest.raises(ValueError, match="not in label_names"):
        ZeroShotVideoDataset(
            action_data['k600_list'], [],
            label_names=action_data['k600_names'],
            classes=['abseiling', 'moonwalking'])
    with pytest.raises(ValueError, match='names only 4 classes'):
        ZeroShotVideoDataset(
            action_data['k600_list'], [], label_names=action_data['ucf_names'])
    dataset = ZeroShotVideoDataset(
        action_data['k600_list'], [],
        label_names=action_data['k600_names'],
        classes=action_data['k600_splits'][0],
        data_prefix=dict(video=action_data['video_dir']))
    # videos of the 3 split classes, labels in the split's order
    want = {1: 0, 4: 1, 2: 2}
    assert [dataset.get_data_info(i)['label'] for i in range(len(dataset))
            ] == [want[i % 6] for i in range(NUM_VIDEOS) if i % 6 in want]
    assert dataset.metainfo['classes'] == tuple(K600_SPLITS[0])
    ucf = ZeroShotVideoDataset(
        action_data['ucf_splits'][0], [], label_names=action_data['ucf_names'])
    assert ucf.vocabulary.descriptions[1] == ['riding a bicycle']


def test_zeroshot_dataset_malformed_list_lines(action_data, tmp_path):
    from icar_dense.datasets import ZeroShotVideoDataset
    for line, message in (('v2.mp4 x', 'must be "VIDEO_PATH LABEL"'),
                          ('v2.mp4', 'has no label'),
                          ('my video.mp4 1', 'must be "VIDEO_PATH LABEL"')):
        ann = tmp_path / 'bad_list.txt'
        ann.write_text(f'v1.mp4 0\n{line}\n')
        with pytest.raises(ValueError, match=message) as err:
            ZeroShotVideoDataset(
                str(ann), [], label_names=action_data['ucf_names'])
        assert str(ann) in str(err.value)


def test_demo_prints_top5(action_data, tmp_path):
    """tools/demo.py VIDEO CONFIG CKPT --vocabulary ... --out-file X.json"""
    from conftest import check_ok, run_tool
    cfg = _load('icar_swinb_k400_zeroshot.py', action_data, str(tmp_path))
    config = str(tmp_path / 'tiny_k400_zeroshot.py')
    cfg.dump(config)
    video = osp.join(action_data['video_dir'], action_data['videos'][1])
    vocabulary = [
        'diving', 'biking', 'juggling balls', 'abseiling', 'arguing', 'climb',
        'cartwheel'
    ]
    out = str(tmp_path / 'top5.json')
    proc = check_ok(
        run_tool([
            'python', 'tools/demo.py', video, config, action_data['icar'],
            '--vocabulary', ','.join(vocabulary), '--out-file', out
        ]))
    lines = [
        line for line in proc.stdout.splitlines()
        if line[:2] in {f'{i}.'
                        for i in range(1, 6)}
    ]
    assert len(lines) == 5, proc.stdout
    with open(out) as f:
        saved = json.load(f)
    labels = saved['top']
    assert saved['num_classes'] == 7 and len(labels) == 5
    scores = [item['score'] for item in labels]
    assert scores == sorted(scores, reverse=True)
    assert all(item['label'] in vocabulary for item in labels)
    assert sum(scores) <= 1 + 1e-6  # softmax averaged over clips x crops
    for item, line in zip(labels, lines):
        assert line.startswith(f"{item['rank']}. {item['label']}: ")

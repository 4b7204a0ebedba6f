"""Every public detection config: built as-is, then trained for 2 iterations
(one epoch of 4 tiny images, batch 2) and evaluated with shrink overrides;
plus tools/test.py with 1 process vs tools/dist_test.sh with 2 (gloo) and
tools/demo.py.
"""
import glob
import json
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import REPO, BackgroundTool, free_port
from test_det_ov import det_data  # noqa: F401  (module fixture)
from test_det_ov import tiny_text_classifier

# the public configs (icar_*) and the `make demo` one; other configs in
# configs/det (e.g. the custom-dataset example) have their own tests
DET_CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs/det/icar_*.py')) +
    [osp.join(REPO, 'configs/det/demo_lvis_tiny.py')])
SIZE = (64, 64)
TINY_BACKBONE = dict(
    arch=None, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
    window_size=2, drop_path_rate=0.0, init_cfg=None)


# one torch thread and no config formatting: tests/conftest.py
pytestmark = pytest.mark.usefixtures('fast_cpu')


def _shrink_pipeline(pipeline):
    for t in pipeline:
        kind = t['type'].split('.')[-1]
        if kind in ('Resize', 'RandomResize'):
            t['scale'] = SIZE
        elif kind == 'RandomChoiceResize':
            t['scales'] = [SIZE]
        elif kind == 'RandomCrop':
            t['crop_size'] = (48, 48)
        elif kind == 'RandomChoice':
            for branch in t['transforms']:
                _shrink_pipeline(branch)


def _leaf_dataset(dataset):
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def shrink(cfg, data, work_dir):
    """Tiny Swin, tiny text tower, 64 px images, the tiny dataset."""
    model = cfg.model
    model.backbone.update(TINY_BACKBONE)
    model.neck.update(in_channels=[16, 32, 64, 128], out_channels=32)
    model.rpn_head.update(in_channels=32, feat_channels=32)
    for aug in model.data_preprocessor.get('batch_augments') or []:
        aug['size'] = SIZE
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = 32
    roi.mask_roi_extractor.out_channels = 32
    roi.mask_head.update(in_channels=32, conv_out_channels=32, num_convs=1)
    heads = roi.bbox_head if isinstance(roi.bbox_head, list) else [
        roi.bbox_head]
    lvis = 'LVIS' in _leaf_dataset(cfg.train_dataloader.dataset)['type']
    for head in heads:
        head.update(
            in_channels=32, conv_out_channels=32, fc_out_channels=64,
            norm_cfg=dict(type='GN', num_groups=8, requires_grad=True))
        tc = head.text_classifier
        vocabulary = tc.vocabulary
        if lvis:  # the config reads names + definitions from LVIS val
            assert vocabulary.endswith('.json')
            vocabulary = data['lvis_val']
            head.num_classes = 6
            assert head.train_classes['frequencies'] == ('f', 'c')
            head.train_classes['ann_file'] = data['lvis_val']
            if head.loss_cls.type == 'SigmoidFederatedLoss':
                head.loss_cls.class_freq = data['lvis_train']
                head.loss_cls.num_sample_classes = 3
        head.text_classifier = tiny_text_classifier(
            data, vocabulary, background=tc.background,
            descriptions=tc.descriptions, tau=tc.tau)
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    for rcnn in (model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn,
                                                    list) else
                 [model.train_cfg.rcnn]):
        rcnn.sampler.num = 64
    model.test_cfg.rpn.update(nms_pre=100, max_per_img=50)

    root = data['lvis_root'] if lvis else data['coco_root']
    for split, loader in (('train', cfg.train_dataloader),
                          ('val', cfg.val_dataloader),
                          ('val', cfg.test_dataloader)):
        loader.update(num_workers=0, persistent_workers=False)
        leaf = _leaf_dataset(loader.dataset)
        # LVIS: image paths come from the coco_url of each image
        leaf.update(data_root=root,
                    ann_file=f'annotations/instances_{split}.json',
                    data_prefix=dict(img='' if lvis else split + '/'))
        _shrink_pipeline(leaf.pipeline)
    cfg.train_dataloader.batch_size = 2
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        evaluator.ann_file = osp.join(root, 'annotations/instances_val.json')
    if cfg.train_cfg.type == 'IterBasedTrainLoop':
        cfg.train_cfg.update(max_iters=2, val_interval=2)
        cfg.default_hooks.checkpoint.interval = 2
    else:
        cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    return cfg


def test_public_configs_as_released():
    """The full-size settings users expect (no building: no weights here)."""
    assert len(DET_CONFIGS) >= 8, DET_CONFIGS
    lvis = Config.fromfile(osp.join(REPO, 'configs/det/icar_swinb_lvis_ov.py'))
    head = lvis.model.roi_head.bbox_head
    assert lvis.model.backbone.arch == 'base'
    assert lvis.model.backbone.init_cfg.checkpoint == \
        'data/pretrained/icar_swinb.pth'
    assert head.num_classes == 1203 and head.reg_class_agnostic
    assert head.train_classes.frequencies == ('f', 'c')
    # RoBERTa: roberta-base's shape (weights from the iCAR checkpoint) and
    # the tokenizer folder every config shares (roberta_base_arch.py)
    assert head.text_classifier.text_encoder.model is None
    assert head.text_classifier.text_encoder.config.hidden_size == 768
    assert head.text_classifier.text_encoder.tokenizer == \
        'data/pretrained/roberta-base'
    assert head.text_classifier.tau == 0.03
    assert head.text_classifier.background
    assert lvis.model.roi_head.mask_head.class_agnostic
    assert lvis.train_dataloader.dataset.type == 'ClassBalancedDataset'
    assert lvis.train_dataloader.dataset.oversample_thr == 1e-3
    assert lvis.train_dataloader.dataset.dataset.base_frequencies == ('f',
                                                                      'c')
    assert lvis.train_dataloader.batch_size * 8 == 16
    assert lvis.model.data_preprocessor.batch_augments[0].size == (1024, 1024)
    # lvis-api's numbers in bounded memory (tests/det/test_lvis_metric.py)
    assert lvis.val_evaluator.type == 'FastLVISMetric'
    assert lvis.test_evaluator.type == 'FastLVISMetric'
    assert set(lvis.val_evaluator.metric) == {'bbox', 'segm'}

    coco = Config.fromfile(osp.join(REPO, 'configs/det/icar_swinb_coco_ov.py'))
    head = coco.model.roi_head.bbox_head
    assert head.num_classes == 65 == len(head.text_classifier.vocabulary)
    assert len(head.train_classes) == 48
    assert coco.val_evaluator.type == 'OVCocoAP50Metric'
    cascade = Config.fromfile(osp.join(
        REPO, 'configs/det/icar_swinb_cascade_maskrcnn_coco_3x.py'))
    assert [h.type for h in cascade.model.roi_head.bbox_head
            ] == ['OVShared4Conv1FCBBoxHead'] * 3
    # one text encoder for the three stages (tests/det/test_det_cascade_shared)
    assert cascade.model.roi_head.type == 'ICARCascadeRoIHead'
    assert cascade.train_cfg.max_epochs == 36
    swint = Config.fromfile(
        osp.join(REPO, 'configs/det/icar_swint_lvis_ov.py'))
    assert swint.model.backbone.arch == 'tiny'
    assert swint.model.neck.in_channels == [96, 192, 384, 768]


def test_full_size_swinb_builds(det_data):
    """icar_swinb_lvis_ov.py builds at full size (Swin-B, FPN 256, 4conv1fc
    1024) -- only the text tower is the tiny one."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(osp.join(REPO, 'configs/det/icar_swinb_lvis_ov.py'))
    init_default_scope('mmdet')
    head = cfg.model.roi_head.bbox_head
    head.num_classes = 6
    head.train_classes.ann_file = det_data['lvis_val']
    head.text_classifier = tiny_text_classifier(det_data,
                                                det_data['lvis_val'])
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.backbone.out_channels == [128, 256, 512, 1024]
    assert model.roi_head.bbox_head.text_classifier.visual_proj.in_features \
        == 1024
    swin_params = sum(p.numel() for p in model.backbone.parameters())
    assert 86e6 < swin_params < 89e6  # Swin-B


def train_tiny(config, data, work_dir):
    """Train ``config`` (shrunk) for one epoch = 2 iterations, validating
    at its end; returns the shrunk config and the validation metrics."""
    from mmengine.registry import RUNNERS
    cfg = shrink(Config.fromfile(osp.join(REPO, config)), data, work_dir)
    cfg.experiment_name = 'test_' + osp.basename(config)[:-3]
    runner = RUNNERS.build(cfg)
    runner.train()
    assert runner.iter == 2
    assert glob.glob(osp.join(work_dir, '*_[12].pth'))
    with open(osp.join(work_dir, 'metrics_val.jsonl')) as f:
        metrics = json.loads(f.read().splitlines()[-1])
    return cfg, metrics


def check_metric_names(config, metrics):
    if 'lvis' in config:
        keys = ['lvis/bbox_AP', 'lvis/bbox_APr', 'lvis/bbox_APc',
                'lvis/bbox_APf', 'lvis/segm_AP', 'lvis/segm_APr',
                'lvis/segm_APc', 'lvis/segm_APf']
    elif 'coco_ov' in config:
        keys = ['coco/bbox_AP50_novel', 'coco/bbox_AP50_base',
                'coco/bbox_AP50_all', 'coco/segm_AP50_novel',
                'coco/segm_AP50_base', 'coco/segm_AP50_all',
                'coco/bbox_mAP', 'coco/bbox_mAP_50']
    else:
        keys = ['coco/bbox_mAP', 'coco/segm_mAP']
    missing = [k for k in keys if k not in metrics]
    assert not missing, (missing, sorted(metrics))


@pytest.fixture(scope='module')
def tiny_lvis_run(det_data, tmp_path_factory):
    """icar_swinb_lvis_ov.py shrunk and trained; its config dumped to a
    file for the command-line tools."""
    work = str(tmp_path_factory.mktemp('lvis_run'))
    config = 'configs/det/icar_swinb_lvis_ov.py'
    cfg, metrics = train_tiny(config, det_data, work)
    cfg_file = osp.join(work, 'tiny_lvis_ov.py')
    cfg.dump(cfg_file)
    return dict(config=cfg_file, checkpoint=osp.join(work, 'epoch_1.pth'),
                metrics=metrics, work=work)


def test_lvis_ov_config_trains_and_evaluates(tiny_lvis_run):
    check_metric_names('lvis', tiny_lvis_run['metrics'])


@pytest.mark.parametrize(
    'config', [c for c in DET_CONFIGS if not c.endswith('swinb_lvis_ov.py')])
def test_config_trains_and_evaluates(config, det_data, tmp_path):
    _, metrics = train_tiny(config, det_data, str(tmp_path))
    check_metric_names(config, metrics)


def _read_predictions(path):
    import pickle
    with open(path, 'rb') as f:
        results = pickle.load(f)
    return {r['img_id']: r['pred_instances'] for r in results}


def test_one_process_and_two_process_evaluation_agree(tiny_lvis_run):
    """tools/test.py (1 process) vs tools/dist_test.sh (2 gloo processes):
    the same predictions for every image, each image once, same metrics."""
    import numpy as np
    run = tiny_lvis_run
    single = osp.join(run['work'], 'test1')
    dist = osp.join(run['work'], 'test2')
    # both at once (2 cores): the environment of conftest.run_tool
    procs = [
        BackgroundTool(['python', 'tools/test.py', run['config'],
                        run['checkpoint'], '--work-dir', single, '--out',
                        osp.join(single, 'preds.pkl')]),
        BackgroundTool(['bash', 'tools/dist_test.sh', run['config'],
                        run['checkpoint'], '2', '--work-dir', dist, '--out',
                        osp.join(dist, 'preds.pkl')],
                       env=dict(PORT=free_port())),
    ]
    for proc in procs:
        proc.finish()
    metrics = []
    for work in (single, dist):
        with open(osp.join(work, 'metrics_test.json')) as f:
            metrics.append(json.load(f)['metrics'])
    # One process vs two (and other thread counts with TEST_THREADS): the
    # same model, but thread splits and kernels round differently (~1e-7),
    # so near-tied detections may come out in another order. Detections are
    # compared as a set (ordered by label, then box) with float tolerances;
    # the metrics are a function of that set and its ranking.
    assert metrics[0].keys() == metrics[1].keys()
    for key, value in metrics[0].items():
        assert metrics[1][key] == pytest.approx(value, abs=1e-6), key
    assert 'lvis/bbox_APr' in metrics[0]
    preds = [_read_predictions(osp.join(w, 'preds.pkl'))
             for w in (single, dist)]
    assert sorted(preds[0]) == sorted(preds[1]) == [1, 2, 3, 4]
    for img_id, pred in preds[0].items():
        other = preds[1][img_id]
        assert len(pred['labels']) > 0
        assert len(pred['labels']) == len(other['labels'])
        a = _by_label_and_box(pred)
        b = _by_label_and_box(other)
        np.testing.assert_array_equal(pred['labels'][a], other['labels'][b])
        np.testing.assert_allclose(pred['bboxes'][a], other['bboxes'][b],
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(pred['scores'][a], other['scores'][b],
                                   rtol=1e-5, atol=1e-6)


def _by_label_and_box(pred):
    """Order of detections by label, then box corner (score-independent)."""
    import numpy as np
    boxes = np.asarray(pred['bboxes'])
    return np.lexsort((boxes[:, 1].round(2), boxes[:, 0].round(2),
                       np.asarray(pred['labels'])))


def test_demo_writes_a_picture(tiny_lvis_run, det_data, tmp_path,
                               monkeypatch, capsys):
    """tools/demo.py IMAGE CONFIG CKPT --vocabulary "cat,dog" on a photo."""
    import runpy
    import sys
    import cv2
    from data_factory import photo_paths
    image = photo_paths()[1]  # scikit-image's chelsea (a cat)
    out = str(tmp_path / 'cat_det.jpg')
    monkeypatch.setattr(sys, 'argv', [
        'demo.py', image, tiny_lvis_run['config'],
        tiny_lvis_run['checkpoint'], '--vocabulary', 'cat,dog',
        '--score-thr', '0', '--out-file', out])
    runpy.run_path(osp.join(REPO, 'tools/demo.py'), run_name='__main__')
    printed = capsys.readouterr().out
    picture = cv2.imread(out)
    assert picture is not None
    assert picture.shape[:2] == cv2.imread(image).shape[:2]
    assert 'vocabulary of 2 classes' in printed
    labels = {line.split(':')[0].strip() for line in printed.splitlines()
              if line.startswith('  ')}
    assert labels and labels <= {'cat', 'dog'}

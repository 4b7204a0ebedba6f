"""Open-vocabulary detection: datasets, split, head, losses, COCO OV metric.

Also holds the tiny-data builders shared with ``test_det_configs.py``.
"""
import json
import os
import os.path as osp

import pytest
import torch

import icar_dense  # noqa: F401
from data_factory import make_coco
from helpers_text import build_tokenizer_dir, tiny_roberta_encoder_cfg

# ---------------------------------------------------------------------------
# tiny data (real photos, real LVIS / COCO category ids and names)
# ---------------------------------------------------------------------------
# LVIS v1 ids are the 1-based positions in mmdet's LVISV1Dataset.METAINFO.
# frequency: f = frequent, c = common, r = rare (novel)
LVIS_CATS = [
    (3, 'airplane', 'f'),
    (80, 'cow', 'f'),
    (225, 'cat', 'c'),
    (378, 'dog', 'c'),
    (422, 'elephant', 'r'),
    (173, 'bus_(vehicle)', 'r'),
]
# COCO 2017 category ids of mmdet's 80 classes (CocoDataset.METAINFO order)
COCO_IDS = (list(range(1, 12)) + list(range(13, 26)) + [27, 28] +
            list(range(31, 45)) + list(range(46, 66)) + [67, 70] +
            list(range(72, 83)) + list(range(84, 91)))


def lvis_categories():
    from mmdet.datasets import LVISV1Dataset
    names = LVISV1Dataset.METAINFO['classes']
    cats = []
    for cat_id, name, freq in LVIS_CATS:
        assert names[cat_id - 1] == name, (cat_id, name)
        cats.append(
            dict(id=cat_id, name=name, frequency=freq,
                 **{'def': f'a {name.split("_")[0]} in a photograph'}))
    return cats


def coco_categories(order=None):
    from mmdet.datasets import CocoDataset
    names = CocoDataset.METAINFO['classes']
    assert len(COCO_IDS) == len(names) == 80
    cats = [dict(id=i, name=n) for i, n in zip(COCO_IDS, names)]
    if order is not None:
        # put classes that make_coco annotates first (it assigns categories
        # in list order); the json stays sorted by id
        first = [c for c in cats if c['name'] in order]
        first.sort(key=lambda c: order.index(c['name']))
        return first + [c for c in cats if c['name'] not in order]
    return cats


# make_coco gives image i objects of categories[(2i + k) % len]; these get
# annotations: 5 base and 3 novel classes of the OVR-CNN split
COCO_ANNOTATED = ['person', 'airplane', 'car', 'bus', 'train', 'cat', 'dog',
                  'horse']


def sort_json_categories(ann_file, image_folder=None):
    """Categories sorted by id (as in the releases); for LVIS, image urls
    pointing at ``image_folder`` (mmdet reads LVIS v1 paths from them)."""
    with open(ann_file) as f:
        data = json.load(f)
    data['categories'].sort(key=lambda c: c['id'])
    if image_folder is not None:
        for image in data['images']:
            image['coco_url'] = ('http://images.cocodataset.org/' +
                                 image_folder + '/' + image['file_name'])
    with open(ann_file, 'w') as f:
        json.dump(data, f)


def build_det_data(root):
    """Tiny LVIS v1 and COCO datasets (train/val) plus a tiny text tower."""
    lvis_root = osp.join(root, 'lvis')
    cats = lvis_categories()
    for split in ('train', 'val'):
        ann = make_coco(lvis_root, cats, num_images=4, size=(64, 64),
                        split=split, objects_per_image=2, lvis=True)
        sort_json_categories(ann, image_folder=split)
    coco_root = osp.join(root, 'coco')
    for split in ('train', 'val'):
        ann = make_coco(coco_root, coco_categories(COCO_ANNOTATED),
                        num_images=4, size=(64, 64), split=split,
                        objects_per_image=2)
        sort_json_categories(ann)
    from mmdet.datasets import CocoDataset, LVISV1Dataset
    words = list(CocoDataset.METAINFO['classes']) + [
        c['name'].replace('_', ' ') + ', ' + c['def'] for c in cats]
    tok = build_tokenizer_dir(osp.join(root, 'tokenizer'), extra_texts=words)
    del LVISV1Dataset
    return dict(
        root=root,
        lvis_root=lvis_root,
        lvis_train=osp.join(lvis_root, 'annotations/instances_train.json'),
        lvis_val=osp.join(lvis_root, 'annotations/instances_val.json'),
        coco_root=coco_root,
        coco_train=osp.join(coco_root, 'annotations/instances_train.json'),
        coco_val=osp.join(coco_root, 'annotations/instances_val.json'),
        text_encoder=tiny_roberta_encoder_cfg(tok, embed_dim=16))


@pytest.fixture(scope='module')
def det_data(tmp_path_factory):
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    return build_det_data(str(tmp_path_factory.mktemp('det_data')))


def tiny_text_classifier(data, vocabulary, background=True, **kwargs):
    cfg = dict(
        type='TextClassifier',
        embed_dim=16,
        text_encoder=data['text_encoder'],
        vocabulary=vocabulary,
        templates=['a photo of a {}.', 'a {}.'],
        tau=0.05,
        background=background)
    cfg.update(kwargs)
    return cfg


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------
def infos(dataset):
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def test_lvis_split_from_frequency(det_data):
    from icar_dense.datasets import OVLVISV1Dataset
    kw = dict(ann_file=det_data['lvis_train'], data_root=det_data['lvis_root'],
              data_prefix=dict(img=''), pipeline=[])
    train = OVLVISV1Dataset(**kw)
    test = OVLVISV1Dataset(test_mode=True, **kw)
    names = [n for _, n, _ in sorted(LVIS_CATS)]
    assert train.metainfo['classes'] == tuple(names)
    novel = {n for _, n, f in LVIS_CATS if f == 'r'}
    assert set(train.metainfo['novel_classes']) == novel
    assert len(train.metainfo['base_classes']) == 4
    novel_labels = {names.index(n) for n in novel}

    def labels(ds):
        return [i['bbox_label'] for d in infos(ds) for i in d['instances']]

    # training drops every rare annotation but keeps every image
    assert len(train) == len(test) == 4
    assert all(osp.isfile(info['img_path']) for info in infos(train))
    assert novel_labels & set(labels(test))
    assert not novel_labels & set(labels(train))
    assert len(labels(train)) == len(labels(test)) - sum(
        lab in novel_labels for lab in labels(test))
    # frequencies chosen by config: only 'f' is base
    only_f = OVLVISV1Dataset(base_frequencies=('f', ), **kw)
    assert set(labels(only_f)) <= {names.index('airplane'),
                                   names.index('cow')}
    with pytest.raises(ValueError, match='base_frequencies'):
        OVLVISV1Dataset(base_frequencies=('x', ), **kw)


def test_lvis_json_without_frequency_is_an_error(det_data, tmp_path):
    from icar_dense.datasets import OVLVISV1Dataset
    with open(det_data['lvis_train']) as f:
        data = json.load(f)
    for cat in data['categories']:
        cat.pop('frequency')
    bad = str(tmp_path / 'no_frequency.json')
    with open(bad, 'w') as f:
        json.dump(data, f)
    with pytest.raises(KeyError, match='no_frequency.json.*frequency'):
        OVLVISV1Dataset(ann_file=bad, pipeline=[])
    from icar_dense.datasets.det_ov import lvis_split_names
    with pytest.raises(KeyError, match='no_frequency.json'):
        lvis_split_names(bad)


def test_coco_ovr_split_by_name(det_data):
    from icar_dense.datasets import OVCocoDataset
    from icar_dense.datasets.det_ov import (COCO_OVR_BASE_CLASSES,
                                            COCO_OVR_CLASSES,
                                            COCO_OVR_NOVEL_CLASSES)
    assert len(COCO_OVR_BASE_CLASSES) == 48
    assert len(COCO_OVR_NOVEL_CLASSES) == 17
    assert {'airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella',
            'tie', 'snowboard', 'skateboard', 'cup', 'knife', 'cake',
            'couch', 'keyboard', 'sink', 'scissors'
            } == set(COCO_OVR_NOVEL_CLASSES)
    kw = dict(ann_file=det_data['coco_train'], data_root='',
              data_prefix=dict(img=osp.join(det_data['coco_root'], 'train')),
              filter_cfg=dict(filter_empty_gt=True), pipeline=[])
    train = OVCocoDataset(**kw)
    test = OVCocoDataset(test_mode=True, **kw)
    assert train.metainfo['classes'] == COCO_OVR_CLASSES
    assert train.metainfo['novel_classes'] == tuple(
        n for n in COCO_OVR_CLASSES if n in COCO_OVR_NOVEL_CLASSES)
    names = COCO_OVR_CLASSES

    def named(ds):
        return {names[i['bbox_label']] for d in infos(ds)
                for i in d['instances']}

    assert named(test) == set(COCO_ANNOTATED)
    assert named(train) == set(COCO_ANNOTATED) - set(COCO_OVR_NOVEL_CLASSES)
    # an explicit class list must follow the file's category order
    with pytest.raises(ValueError, match='category order'):
        OVCocoDataset(metainfo=dict(classes=COCO_OVR_CLASSES[::-1]), **kw)


@pytest.mark.parametrize('key', ['base_classes', 'novel_classes'])
def test_coco_split_with_unknown_class_is_an_error(det_data, key):
    from icar_dense.datasets import OVCocoDataset
    from icar_dense.datasets.det_ov import (COCO_OVR_BASE_CLASSES,
                                            COCO_OVR_NOVEL_CLASSES)
    split = dict(base_classes=list(COCO_OVR_BASE_CLASSES),
                 novel_classes=list(COCO_OVR_NOVEL_CLASSES))
    split[key] = split[key] + ['unicorn']
    with pytest.raises(ValueError, match=f"{key}.*'unicorn'.*instances_"):
        OVCocoDataset(ann_file=det_data['coco_train'], pipeline=[], **split)


# ---------------------------------------------------------------------------
# box head and losses
# ---------------------------------------------------------------------------
def build_head(data, vocabulary, num_classes=None, **kwargs):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    background = kwargs.get('loss_cls', {}).get(
        'type') != 'SigmoidFederatedLoss'
    cfg = dict(
        type='OVShared4Conv1FCBBoxHead',
        in_channels=8,
        conv_out_channels=8,
        fc_out_channels=16,
        roi_feat_size=7,
        num_classes=len(vocabulary) if num_classes is None else num_classes,
        text_classifier=tiny_text_classifier(data, vocabulary,
                                             background=background),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _targets(labels):
    n = len(labels)
    return dict(
        rois=torch.cat([torch.zeros(n, 1), torch.rand(n, 2) * 10,
                        10 + torch.rand(n, 2) * 10], dim=1),
        labels=torch.tensor(labels),
        label_weights=torch.ones(n),
        bbox_targets=torch.zeros(n, 4),
        bbox_weights=torch.ones(n, 4))


def test_vocabulary_size_must_equal_num_classes(det_data):
    with pytest.raises(ValueError, match=r'num_classes=5 .* 3 classes'):
        build_head(det_data, ['cat', 'dog', 'cow'], num_classes=5)
    head = build_head(det_data, ['cat', 'dog', 'cow'])
    head.text_classifier.set_vocabulary(['cat', 'dog'])  # head not told
    with pytest.raises(ValueError, match='num_classes=3'):
        head(torch.rand(2, 8, 7, 7))
    head.set_vocabulary(['cat', 'dog'])
    cls_score, bbox_pred = head(torch.rand(2, 8, 7, 7))
    assert cls_score.shape == (2, 3) and bbox_pred.shape == (2, 4)


def test_softmax_head_trains_only_base_classes(det_data):
    """The novel class (cow) gets no gradient and does not enter the
    softmax: the loss is the CE over the base classes + background."""
    import torch.nn.functional as F
    head = build_head(det_data, ['cat', 'dog', 'cow'],
                      train_classes=['cat', 'dog'])
    t = _targets([0, 1, 3, 3, 0])  # 3 = background
    cls_score = torch.randn(5, 4, requires_grad=True)
    losses = head.loss(cls_score, torch.zeros(5, 4), t['rois'], t['labels'],
                       t['label_weights'], t['bbox_targets'],
                       t['bbox_weights'])
    losses['loss_cls'].backward()
    assert cls_score.grad[:, 2].abs().max() == 0
    assert cls_score.grad[:, [0, 1, 3]].abs().min() > 0
    base = cls_score.detach()[:, [0, 1, 3]]
    expected = F.cross_entropy(base, torch.tensor([0, 1, 2, 2, 0]))
    assert torch.allclose(losses['loss_cls'], expected, atol=1e-5)
    # prediction uses every class of the vocabulary
    head.eval()
    cls_score, _ = head(torch.rand(3, 8, 7, 7))
    assert cls_score.shape == (3, 4)

    bad = build_head(det_data, ['cat', 'dog', 'cow'],
                     train_classes=['cat', 'zebra'])
    with pytest.raises(ValueError, match=r"\['zebra'\].*not in the vocab"):
        bad.loss(cls_score.detach(), torch.zeros(3, 4), *[
            v[:3] for v in _targets([0, 1, 3]).values()])


def test_sigmoid_and_federated_losses(det_data):
    from icar_dense.models.heads import SigmoidFederatedLoss
    import torch.nn.functional as F
    # head: no background embedding with sigmoid losses, and vice versa
    with pytest.raises(ValueError, match='background=False'):
        build_head(det_data, ['cat', 'dog'],
                   loss_cls=dict(type='SigmoidFederatedLoss'),
                   text_classifier=tiny_text_classifier(
                       det_data, ['cat', 'dog'], background=True))
    with pytest.raises(ValueError, match='SigmoidFederatedLoss'):
        build_head(det_data, ['cat', 'dog'],
                   loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True))
    head = build_head(det_data, ['cat', 'dog', 'cow'],
                      train_classes=['cat', 'dog'],
                      loss_cls=dict(type='SigmoidFederatedLoss',
                                    federated=False))
    t = _targets([0, 1, 3, 3])
    cls_score = torch.randn(4, 3, requires_grad=True)
    losses = head.loss(cls_score, torch.zeros(4, 4), *t.values())
    losses['loss_cls'].backward()
    assert cls_score.grad[:, 2].abs().max() == 0  # novel: untouched
    target = torch.tensor([[1., 0.], [0., 1.], [0., 0.], [0., 0.]])
    expected = F.binary_cross_entropy_with_logits(
        cls_score.detach()[:, :2], target, reduction='sum') / 4
    assert torch.allclose(losses['loss_cls'], expected, atol=1e-5)
    scores = head.loss_cls.get_activation(cls_score.detach())
    assert scores.shape == (4, 4)  # + background column for mmdet's NMS

    # federated: present classes + sampled ones, never a disallowed or
    # zero-frequency class
    loss = SigmoidFederatedLoss(num_sample_classes=4,
                                class_freq=[9, 4, 0, 1, 1, 16])
    loss.set_allowed_classes(torch.tensor([1, 1, 1, 1, 0, 1]).bool())
    labels = torch.tensor([1, 6, 6])
    for _ in range(20):
        mask = loss._federated_mask(labels, 6, loss.allowed_classes)
        assert mask.sum() == 4 and mask[1] == 1
        assert mask[2] == 0 and mask[4] == 0
    with pytest.raises(ValueError, match='mask has 6 entries'):
        loss(torch.randn(2, 3), torch.tensor([0, 3]))
    loss.set_allowed_classes(None)
    with pytest.raises(ValueError, match='class_freq has 6 entries'):
        loss(torch.randn(2, 3), torch.tensor([0, 3]))


def test_lvis_frequency_file_for_federated_loss(det_data):
    from icar_dense.models.heads import SigmoidFederatedLoss
    loss = SigmoidFederatedLoss(class_freq=det_data['lvis_train'])
    assert loss.sample_weights.numel() == len(LVIS_CATS)


# ---------------------------------------------------------------------------
# COCO open-vocabulary metric on a hand-made case
# ---------------------------------------------------------------------------
def _gt_json(path):
    images = [dict(id=1, width=100, height=100, file_name='a.jpg'),
              dict(id=2, width=100, height=100, file_name='b.jpg')]
    boxes = [(1, 1, [10, 10, 30, 30]),   # person, image 1
             (1, 3, [50, 50, 40, 40]),   # car, image 1
             (2, 3, [5, 5, 20, 20]),     # car, image 2
             (2, 17, [40, 40, 50, 50])]  # cat, image 2
    anns = [dict(id=i + 1, image_id=img, category_id=cat, bbox=box,
                 area=box[2] * box[3], iscrowd=0,
                 segmentation=[[box[0], box[1], box[0] + box[2], box[1],
                                box[0] + box[2], box[1] + box[3], box[0],
                                box[1] + box[3]]])
            for i, (img, cat, box) in enumerate(boxes)]
    cats = [dict(id=1, name='person'), dict(id=3, name='car'),
            dict(id=17, name='cat')]
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return path


@pytest.mark.parametrize('classes', [('person', 'car', 'cat'),
                                     ('cat', 'person', 'car')])
def test_ov_coco_metric_hand_made(tmp_path, classes):
    from icar_dense.evaluation import OVCocoAP50Metric
    metric = OVCocoAP50Metric(ann_file=_gt_json(str(tmp_path / 'gt.json')),
                              metric='bbox')
    metric.dataset_meta = dict(classes=classes, novel_classes=('cat', ),
                               base_classes=('person', 'car'))
    lab = {n: i for i, n in enumerate(classes)}

    def sample(img_id, dets):
        boxes = torch.tensor([d[1] for d in dets], dtype=torch.float)
        return dict(img_id=img_id, ori_shape=(100, 100), pred_instances=dict(
            bboxes=boxes, scores=torch.tensor([d[2] for d in dets]),
            labels=torch.tensor([lab[d[0]] for d in dets])))

    metric.process({}, [
        # person: exact; car: exact (score 0.9)
        sample(1, [('person', [10, 10, 40, 40], 0.95),
                   ('car', [50, 50, 90, 90], 0.9)]),
        # car: a false positive above the missed car; cat: IoU < 0.5
        sample(2, [('car', [60, 0, 99, 20], 0.8),
                   ('cat', [40, 40, 70, 70], 0.7)]),
    ])
    results = metric.evaluate(2)
    # AP50: person 1; car: precision 1 up to recall 0.5 -> 51/101; cat 0
    car = 51 / 101
    assert results['coco/bbox_AP50_novel'] == 0.0
    assert results['coco/bbox_AP50_base'] == round((1 + car) / 2, 3)
    assert results['coco/bbox_AP50_all'] == round((1 + car) / 3, 3)
    # same number as COCOeval's own AP50 over all classes
    assert results['coco/bbox_AP50_all'] == results['coco/bbox_mAP_50']


def test_ov_coco_metric_needs_known_novel_classes(tmp_path):
    from icar_dense.evaluation import OVCocoAP50Metric
    metric = OVCocoAP50Metric(ann_file=_gt_json(str(tmp_path / 'gt.json')),
                              metric='bbox', novel_classes=['unicorn'])
    metric.dataset_meta = dict(classes=('person', 'car', 'cat'))
    pred = dict(bboxes=torch.tensor([[10., 10, 40, 40]]),
                scores=torch.tensor([0.9]), labels=torch.tensor([0]))
    metric.process({}, [dict(img_id=1, ori_shape=(100, 100),
                             pred_instances=pred)])
    with pytest.raises(ValueError, match=r"novel_classes \['unicorn'\]"):
        metric.evaluate(1)

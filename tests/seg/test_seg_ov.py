"""The open-vocabulary split: seen-only training data and the seen/unseen
metric."""
import math

import numpy as np
import pytest
import torch

import icar_dense  # noqa: F401
from icar_dense.datasets import ADE20KSeenDataset
from icar_dense.evaluation import SeenUnseenIoUMetric

CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')


def _samples(pairs):
    out = []
    for pred, gt in pairs:
        out.append(
            dict(
                pred_sem_seg=dict(data=torch.tensor(pred)[None]),
                gt_sem_seg=dict(data=torch.tensor(gt)[None])))
    return out


def _evaluate(metric, pairs, classes):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, _samples(pairs))
    return metric.evaluate(len(pairs))


def test_metric_matches_hand_computed_confusion_matrix():
    # classes a, b, c, d; c and d unseen; 255 = ignore
    pred = [[0, 0, 1, 2],
            [1, 1, 2, 2],
            [0, 3, 3, 1]]
    gt = [[0, 0, 0, 2],
          [1, 1, 2, 255],
          [0, 3, 2, 2]]
    # Confusion matrix (rows gt, cols pred), the ignored pixel left out:
    #        a  b  c  d
    #   a  [ 3, 1, 0, 0 ]
    #   b  [ 0, 2, 0, 0 ]
    #   c  [ 0, 1, 2, 1 ]
    #   d  [ 0, 0, 0, 1 ]
    # IoU = diag / (row + col - diag):
    #   a 3/(4+3-3)=3/4   b 2/(2+4-2)=1/2   c 2/(4+2-2)=1/2   d 1/(1+2-1)=1/2
    iou = dict(a=3 / 4, b=1 / 2, c=1 / 2, d=1 / 2)
    seen = (iou['a'] + iou['b']) / 2
    unseen = (iou['c'] + iou['d']) / 2
    metric = SeenUnseenIoUMetric(unseen_classes=['c', 'd'])
    res = _evaluate(metric, [(pred, gt)], ('a', 'b', 'c', 'd'))
    assert res['mIoU_seen'] == round(seen * 100, 2) == 62.5
    assert res['mIoU_unseen'] == round(unseen * 100, 2) == 50.0
    assert res['hIoU'] == round(2 * seen * unseen / (seen + unseen) * 100,
                                2) == 55.56
    # mmseg's own numbers are untouched
    assert res['mIoU'] == round(np.mean(list(iou.values())) * 100, 2)
    assert res['aAcc'] == round(8 / 11 * 100, 2)


def test_metric_skips_absent_classes_and_sums_over_images():
    rng = np.random.default_rng(0)
    classes = tuple('abcdef')
    pairs = []
    for _ in range(3):
        gt = rng.integers(0, 5, (6, 7))  # 'f' never in the ground truth
        pred = np.where(rng.random((6, 7)) < 0.6, gt,
                        rng.integers(0, 5, (6, 7)))  # nor predicted
        gt[0, :3] = 255
        pairs.append((pred.tolist(), gt.tolist()))
    conf = np.zeros((6, 6))
    for pred, gt in pairs:
        for p, g in zip(np.ravel(pred), np.ravel(gt)):
            if g != 255:
                conf[g, p] += 1
    with np.errstate(invalid='ignore'):
        iou = np.diag(conf) / (conf.sum(0) + conf.sum(1) - np.diag(conf))
    assert math.isnan(iou[5])
    unseen_ids = [1, 4, 5]
    seen_ids = [0, 2, 3]
    metric = SeenUnseenIoUMetric(unseen_classes=['b', 'e', 'f'])
    res = _evaluate(metric, pairs, classes)
    assert res['mIoU_seen'] == pytest.approx(
        np.mean(iou[seen_ids]) * 100, abs=0.006)
    assert res['mIoU_unseen'] == pytest.approx(
        np.nanmean(iou[unseen_ids]) * 100, abs=0.006)


def test_metric_rejects_unknown_or_empty_unseen_classes():
    with pytest.raises(ValueError, match='non-empty list'):
        SeenUnseenIoUMetric(unseen_classes=[])
    metric = SeenUnseenIoUMetric(unseen_classes=['zebra'])
    # refused when the runner hands over the classes, before inference
    with pytest.raises(ValueError, match=r"\['zebra'\] are not among"):
        metric.dataset_meta = dict(classes=('a', 'b'))


def test_metric_group_means_follow_nan_to_num():
    """With nan_to_num, a class absent from prediction and ground truth
    counts as that value in mIoU_seen / mIoU_unseen, as in mIoU."""
    # 'c' is never present: IoU NaN -> 0 with nan_to_num=0
    metric = SeenUnseenIoUMetric(unseen_classes=['b', 'c'], nan_to_num=0)
    res = _evaluate(metric, [([[0, 1]], [[0, 1]])], ('a', 'b', 'c'))
    assert res['mIoU_unseen'] == 50.0 and res['mIoU'] == pytest.approx(
        200 / 3, abs=0.01)


def test_seen_dataset_ignores_unseen_pixels(tiny_ade_root):
    common = dict(
        data_root=tiny_ade_root,
        metainfo=dict(classes=CLASSES),
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=[dict(type='mmseg.LoadAnnotations', reduce_zero_label=True)])
    from mmseg.datasets import ADE20KDataset
    plain = ADE20KDataset(**common)
    seen = ADE20KSeenDataset(unseen_classes=['sky', 'tree'], **common)
    assert seen.metainfo['classes'] == CLASSES
    assert len(seen.metainfo['palette']) == len(CLASSES)
    assert seen.metainfo['palette'] == plain.metainfo['palette']
    hidden = 0
    for i in range(len(plain)):
        a = plain[i]['gt_seg_map']
        b = seen[i]['gt_seg_map']
        unseen = np.isin(a, [2, 4])
        hidden += unseen.sum()
        assert (b[unseen] == 255).all()
        assert np.array_equal(a[~unseen], b[~unseen])
    assert hidden > 0
    with pytest.raises(ValueError, match=r"\['ceiling'\] are not among"):
        ADE20KSeenDataset(unseen_classes=['ceiling'], **common)


def test_seen_dataset_on_all_150_classes(tiny_ade_root):
    ds = ADE20KSeenDataset(
        unseen_classes=['building'],
        data_root=tiny_ade_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=[dict(type='mmseg.LoadAnnotations', reduce_zero_label=True)])
    assert ds.label_map == {1: 255}
    assert len(ds.metainfo['classes']) == 150
    gt = ds[0]['gt_seg_map']
    assert 1 not in np.unique(gt) and 0 in np.unique(gt)

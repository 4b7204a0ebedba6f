"""FastLVISMetric gives lvis-api's numbers (as mmdet's LVISMetric runs it).

A small synthetic LVIS problem with LVIS' corner cases -- images with more
than 300 detections (score ties at the cut), detections of categories listed
in ``neg_category_ids``, in ``not_exhaustive_category_ids`` and of
categories neither annotated nor listed (dropped), images without ground
truth or without predictions, categories without any ground truth, zero-area
boxes and annotations, score ties across images, ground truths outside an
area range (matched detections ignored), empty masks and masks touching the
image border -- is evaluated by lvis-api 0.5.3 and by
``icar_dense.evaluation.lvis_metric``; boxes and masks.
"""
import json
import os.path as osp

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from conftest import REPO

import icar_dense  # noqa: F401  (registers the metric; lvis on numpy 2)
from icar_dense.evaluation.lvis_metric import (RESULT_KEYS, FastLVISMetric,
                                               LVISDetections,
                                               LVISGroundTruth,
                                               encode_mask_rles,
                                               evaluate_lvis)


# ----------------------------------------------------------------------
# a synthetic LVIS problem
# ----------------------------------------------------------------------
def _ellipse(height, width, box):
    """Bool mask of the ellipse inscribed in ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
    return ((xx - cx) / rx)**2 + ((yy - cy) / ry)**2 <= 1


def _polygon(box, vertices=12):
    x1, y1, x2, y2 = box
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = (x2 - x1) / 2, (y2 - y1) / 2
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)],
                    1).ravel().round(2).tolist()


def make_problem(seed=0, num_images=14, num_cats=12, crowded_image=True):
    """An LVIS annotation dict and mmdet-style predictions per image."""
    rng = np.random.default_rng(seed)
    # ids with gaps, sorted (as LVIS); every frequency present
    cat_ids = (np.arange(num_cats) * 3 + 1).tolist()
    freqs = ['f', 'c', 'r'] * (num_cats // 3)
    categories = [
        dict(id=c, name=f'cat{c}', frequency=f)
        for c, f in zip(cat_ids, freqs)
    ]
    # the last category has no ground truth anywhere
    annotated_cats = cat_ids[:-1]
    images, anns, preds = [], [], []
    ann_id = 1000
    for i in range(num_images):
        img_id = 10 * i + 3
        height, width = int(rng.integers(90, 180)), int(
            rng.integers(90, 200))
        num_gt = 0 if i == 1 else int(rng.integers(1, 9))
        present = rng.choice(annotated_cats, size=min(3, num_gt),
                             replace=False).tolist() if num_gt else []
        absent = [c for c in cat_ids if c not in present]
        neg = rng.choice(absent, size=3, replace=False).tolist()
        rest = [c for c in absent if c not in neg]
        # not exhaustive: one annotated category and one unlisted one
        nel = present[:1] + rest[:1]
        images.append(
            dict(id=img_id, height=height, width=width,
                 neg_category_ids=neg, not_exhaustive_category_ids=nel,
                 file_name=f'{img_id}.jpg'))
        gt_boxes, gt_cats = [], []
        for j in range(num_gt):
            w = float(rng.uniform(4, width * 0.9))
            h = float(rng.uniform(4, height * 0.9))
            x = float(rng.uniform(0, width - w))
            y = float(rng.uniform(0, height - h))
            box = [x, y, x + w, y + h]
            poly = _polygon(box)
            rle = mask_utils.merge(
                mask_utils.frPyObjects([poly], height, width))
            area = float(mask_utils.area(rle))
            if i == 2 and j == 0:
                area = 0.0  # dropped by lvis-api
            cat = present[j % len(present)]
            anns.append(
                dict(id=ann_id, image_id=img_id, category_id=cat,
                     bbox=[round(x, 2), round(y, 2), round(w, 2),
                           round(h, 2)], area=area, segmentation=[poly]))
            ann_id += int(rng.integers(1, 4))
            gt_boxes.append(box)
            gt_cats.append(cat)
        if i == num_images - 1:
            continue  # an image without predictions
        num_det = 330 if (crowded_image and i == 0) else int(
            rng.integers(0, 60))
        boxes, labels, scores = [], [], []
        for k in range(num_det):
            kind = rng.random()
            if gt_boxes and kind < 0.5:
                g = int(rng.integers(len(gt_boxes)))
                b = np.array(gt_boxes[g])
                size = b[2:] - b[:2]
                b = b + rng.normal(0, 0.08, 4) * np.r_[size, size]
                cat = gt_cats[g] if rng.random() < 0.8 else neg[0]
            else:
                w, h = rng.uniform(2, width * 0.8), rng.uniform(
                    2, height * 0.8)
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                b = np.array([x, y, x + w, y + h])
                pool = present + neg + nel + rest[:2]
                cat = pool[int(rng.integers(len(pool)))]
            b = np.clip(b, 0, [width, height, width, height])
            if k % 37 == 5 and k < 290:
                b[2] = b[0]  # zero-area box: dropped
            # coarse scores: ties within and across images
            score = round(float(rng.random()), 2)
            if crowded_image and i == 0 and k >= 290:
                # beyond the 300 cap: exact copies of the ground truth
                # (alternating with misses) scored equal at the cut and
                # below it -- which of them are kept changes the AP
                g = k % len(gt_boxes)
                b = np.array(gt_boxes[g]) if k >= 300 and k % 2 else b
                cat = gt_cats[g]
                score = 0.005 if k < 310 else 0.001
            boxes.append(b)
            labels.append(cat_ids.index(cat))
            scores.append(score)
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        masks = np.zeros((num_det, height, width), bool)
        for k, b in enumerate(boxes.tolist()):
            if k % 23 == 7:
                continue  # an empty mask
            masks[k] = _ellipse(height, width, b)
            if k % 29 == 3:
                masks[k, :, :3] = True  # full columns at the border
                masks[k, :, -2:] = True
        preds.append(
            dict(img_id=img_id, bboxes=boxes,
                 scores=np.array(scores, np.float32),
                 labels=np.array(labels, np.int64), masks=masks))
    dataset = dict(images=images, annotations=anns, categories=categories)
    return dataset, preds


def lvis_api(ann_file, preds, iou_type):
    """lvis-api on the results mmdet's LVISMetric would write."""
    from lvis import LVIS, LVISEval, LVISResults
    gt = LVIS(ann_file)
    cat_ids = gt.get_cat_ids()
    results = []
    for p in preds:
        for k in range(len(p['labels'])):
            b = p['bboxes'][k].tolist()
            det = dict(image_id=p['img_id'],
                       bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]],
                       score=float(p['scores'][k]),
                       category_id=cat_ids[int(p['labels'][k])])
            if iou_type == 'segm':
                rle = mask_utils.encode(
                    np.asfortranarray(p['masks'][k][:, :, None],
                                      dtype=np.uint8))[0]
                rle['counts'] = rle['counts'].decode()
                det['segmentation'] = rle
            results.append(det)
    # through a JSON file, as mmdet does
    path = ann_file + f'.{iou_type}.results.json'
    with open(path, 'w') as f:
        json.dump(results, f)
    lvis_eval = LVISEval(gt, LVISResults(gt, path), iou_type)
    lvis_eval.run()
    return lvis_eval


@pytest.fixture(scope='module')
def problem(tmp_path_factory):
    dataset, preds = make_problem()
    ann_file = str(tmp_path_factory.mktemp('lvis') / 'lvis_val.json')
    with open(ann_file, 'w') as f:
        json.dump(dataset, f)
    return ann_file, preds


def _records(preds, need_all=True):
    records = []
    for p in preds:
        blob, offsets = encode_mask_rles(p['masks'])
        records.append(
            dict(img_id=p['img_id'], bboxes=p['bboxes'], scores=p['scores'],
                 labels=p['labels'].astype(np.int32), mask_rles=blob,
                 mask_offsets=offsets, mask_size=p['masks'].shape[1:]))
    return records


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_equals_lvis_api(problem, iou_type):
    ann_file, preds = problem
    ref = lvis_api(ann_file, preds, iou_type)
    gt = LVISGroundTruth.from_file(ann_file, with_masks=True)
    out = evaluate_lvis(gt, LVISDetections(_records(preds), gt), iou_type)
    assert list(out['results']) == list(RESULT_KEYS)
    for key in RESULT_KEYS:
        assert out['results'][key] == pytest.approx(
            ref.results[key], abs=1e-4), key
    # the whole precision / recall arrays, not only their means
    np.testing.assert_allclose(out['precision'], ref.eval['precision'],
                               atol=1e-12)
    np.testing.assert_allclose(out['recall'], ref.eval['recall'],
                               atol=1e-12)
    # the problem exercises what it claims to
    assert -1 in ref.eval['precision'][0, 0, -1]  # category without GT
    assert 0 < ref.results['AP'] < 1


def _samples(preds):
    """What mmdet's test loop hands a metric (``to_dict()`` form)."""
    import torch
    for p in preds:
        yield dict(
            img_id=p['img_id'], ori_shape=p['masks'].shape[1:],
            pred_instances=dict(
                bboxes=torch.from_numpy(p['bboxes']),
                scores=torch.from_numpy(p['scores']),
                labels=torch.from_numpy(p['labels']),
                masks=torch.from_numpy(p['masks'])))


def test_metric_equals_mmdet_lvis_metric(problem):
    """Same keys and values as mmdet's LVISMetric on the same samples;
    only the masks LVIS looks at are encoded."""
    from mmdet.evaluation import LVISMetric
    ann_file, preds = problem
    ours = FastLVISMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    ref = LVISMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    for metric in (ours, ref):
        for sample in _samples(preds):
            metric.process({}, [sample])
    # encoded: the 300 best detections of the categories annotated in
    # their image (the others are never compared with a mask)
    with open(ann_file) as f:
        dataset = json.load(f)
    cat_ids = [c['id'] for c in dataset['categories']]
    for p, rec in zip(preds, ours.results):
        present = {a['category_id'] for a in dataset['annotations']
                   if a['image_id'] == p['img_id']}
        top = np.argsort(-p['scores'], kind='stable')[:300]
        expected = np.zeros(len(p['labels']), bool)
        expected[top] = True
        expected &= np.isin([cat_ids[k] for k in p['labels']],
                            list(present))
        np.testing.assert_array_equal(np.diff(rec['mask_offsets']) > 0,
                                      expected)
    encoded = sum(int((np.diff(r['mask_offsets']) > 0).sum())
                  for r in ours.results)
    assert 0 < encoded < sum(len(p['labels']) for p in preds)
    # compact records: arrays and one bytes blob per image
    for rec in ours.results:
        assert isinstance(rec['mask_rles'], bytes)
        assert rec['bboxes'].dtype == np.float32
    expected = ref.evaluate(len(preds))
    got = ours.evaluate(len(preds))
    assert list(got) == list(expected)
    assert got == expected
    assert 'lvis/bbox_APr' in got and 'lvis/segm_APf' in got
    for kind in ('bbox', 'segm'):
        assert list(ours.last_results[kind]) == list(RESULT_KEYS)


def test_format_only_writes_mmdets_files(problem, tmp_path):
    from mmdet.evaluation import LVISMetric
    ann_file, preds = problem
    preds = preds[:4]
    kw = dict(ann_file=ann_file, metric=['bbox', 'segm'], format_only=True)
    ours = FastLVISMetric(outfile_prefix=str(tmp_path / 'ours'), **kw)
    ref = LVISMetric(outfile_prefix=str(tmp_path / 'mmdet'), **kw)
    for metric in (ours, ref):
        for sample in _samples(preds):
            metric.process({}, [sample])
        assert metric.evaluate(len(preds)) == {}
    for kind in ('bbox', 'segm'):
        with open(tmp_path / f'ours.{kind}.json') as f:
            got = json.load(f)
        with open(tmp_path / f'mmdet.{kind}.json') as f:
            expected = json.load(f)
        assert len(got) == sum(len(p['labels']) for p in preds)
        assert got == expected


def test_encode_mask_rles_equals_pycocotools():
    rng = np.random.default_rng(3)
    masks = rng.random((9, 23, 17)) < 0.3
    masks[0] = False  # empty
    masks[1] = True  # full: runs across columns
    masks[2, :, :4] = True  # full columns at the left border
    masks[3, :, -1] = True  # ... and at the right
    masks[4] = False
    masks[4, 5:9, 6:8] = True
    ref = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0),
                                              dtype=np.uint8))
    for inputs in (masks, masks.astype(np.uint8)):
        blob, offsets = encode_mask_rles(inputs)
        assert [blob[offsets[i]:offsets[i + 1]] for i in range(9)] == \
            [r['counts'] for r in ref]
    need = np.arange(9) % 2 == 1
    blob, offsets = encode_mask_rles(masks, need)
    for i in range(9):
        part = blob[offsets[i]:offsets[i + 1]]
        assert part == (ref[i]['counts'] if need[i] else b'')
    # already encoded (compressed, str, uncompressed)
    listed = [dict(r) for r in ref]
    listed[0]['counts'] = listed[0]['counts'].decode()
    listed[1] = dict(size=[23, 17], counts=[0, 23 * 17])
    blob, offsets = encode_mask_rles(listed)
    assert [blob[offsets[i]:offsets[i + 1]] for i in range(9)] == \
        [r['counts'] for r in ref]


@pytest.mark.parametrize('shape', [(1, 1), (1, 7), (7, 1), (31, 29)])
def test_encode_mask_rles_random_masks_equal_pycocotools(shape):
    # the runs of all masks are found in one pass over their crops: masks
    # that start / end with ones, single pixels, boxes, empty and full
    # masks side by side must not bleed into each other
    rng = np.random.default_rng(sum(shape))
    height, width = shape
    masks = []
    for density in (0.0, 0.05, 0.5, 0.95, 1.0):
        masks.extend(rng.random((6, height, width)) < density)
    for _ in range(12):
        box = np.zeros(shape, bool)
        r0, c0 = rng.integers(0, height), rng.integers(0, width)
        box[r0:rng.integers(r0, height) + 1,
            c0:rng.integers(c0, width) + 1] = True
        masks.append(box)
    masks = np.stack(masks)
    masks = masks[rng.permutation(len(masks))]
    ref = mask_utils.encode(
        np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8))
    as_uint8 = masks.astype(np.uint8) * 255
    need = rng.random(len(masks)) < 0.7
    for inputs in (masks, as_uint8, torch.from_numpy(masks)):
        blob, offsets = encode_mask_rles(inputs, need)
        got = [blob[offsets[i]:offsets[i + 1]] for i in range(len(masks))]
        assert got == [r['counts'] if n else b'' for r, n in zip(ref, need)]


def test_compress_rle_counts_equals_pycocotools():
    from icar_dense.evaluation.lvis_metric import compress_rle_counts
    rng = np.random.default_rng(4)
    runs = [rng.integers(0, 1 << 20, int(n)) for n in
            rng.integers(1, 30, 100)]
    runs += [np.array([0, 5, 0, 7]), np.array([12]),
             np.array([3, 1 << 22, 1, 5, 1 << 22, 1])]
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in runs])))
    blob, out = compress_rle_counts(np.concatenate(runs), offsets)
    for i, r in enumerate(runs):
        total = int(r.sum())
        ref = mask_utils.frPyObjects(
            [dict(size=[1, total], counts=r)], 1, total)[0]['counts']
        assert blob[out[i]:out[i + 1]] == ref


def test_configs_use_the_fast_metric():
    import glob

    from mmdet.registry import METRICS
    from mmengine.config import Config
    repo = REPO
    paths = glob.glob(osp.join(repo, 'configs', 'det', '*lvis*.py'))
    assert len(paths) >= 4
    for path in paths:
        cfg = Config.fromfile(path)
        for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
            assert evaluator.type == 'FastLVISMetric', path
            assert set(evaluator.metric) == {'bbox', 'segm'}
    assert METRICS.get('FastLVISMetric') is FastLVISMetric
    with pytest.raises(ValueError, match='ann_file'):
        FastLVISMetric(metric='bbox')
    with pytest.raises(KeyError, match='proposal'):
        FastLVISMetric(ann_file='x.json', metric='proposal_fast')


def test_bench_lvis_eval_quick(tmp_path, monkeypatch):
    """benchmarks/bench_lvis_eval.py --quick: every figure, ours equal to
    mmdet's LVISMetric, 2 gloo ranks equal to one process."""
    import io
    import sys
    from contextlib import redirect_stdout
    repo = REPO
    sys.path.insert(0, osp.join(repo, 'benchmarks'))
    import _common as C
    import bench_lvis_eval
    monkeypatch.setenv('ICAR_BENCH_WORK_DIR', str(tmp_path))
    buf = io.StringIO()
    with redirect_stdout(buf):
        bench_lvis_eval.main(['--quick'])
    figs = {f['figure']: f for f in C.parse_json_lines(buf.getvalue())}
    assert set(figs) == {'lvis_eval_full', 'lvis_eval_vs_mmdet',
                         'mask_encoding', 'lvis_eval_dist'}, figs
    full = figs['lvis_eval_full']
    assert 'error' not in full, full
    assert full['machine']['cpu'] and full['images'] == 40
    for phase in ('gt', 'process', 'evaluate'):
        assert full[f'{phase}_s'] >= 0 and full[f'{phase}_peak_rss_mb'] > 0
    assert 'lvis/segm_AP' in full['metrics']
    side = figs['lvis_eval_vs_mmdet']
    assert side['max_abs_metric_diff'] == 0, side
    assert side['ratio_time_mmdet_over_ours'] > 0
    assert figs['mask_encoding']['identical_rle'] is True
    dist = figs['lvis_eval_dist']
    assert 'error' not in dist, dist
    assert dist['rank0_peak_rss_mb'] > 0, dist
    assert dist['metrics_equal_single_process'] is True


def test_lvis_synth_dataset_same_with_helper_processes():
    """bench_lvis_eval draws the annotation file with helper processes: the
    same file as one process draws."""
    import sys
    repo = REPO
    sys.path.insert(0, osp.join(repo, 'benchmarks'))
    import _lvis_synth as S
    assert S.dataset(30, seed=3, procs=2) == S.dataset(30, seed=3)


def test_lvis_synth_repeats_its_pool(tmp_path, monkeypatch):
    """Images beyond the drawn pool repeat its images under their own ids,
    in the annotation file and in the cached predictions alike."""
    import sys
    repo = REPO
    sys.path.insert(0, osp.join(repo, 'benchmarks'))
    import _lvis_cache as D
    import _lvis_synth as S
    monkeypatch.setattr(S, 'POOL', 8)
    monkeypatch.setenv('ICAR_BENCH_WORK_DIR', str(tmp_path))
    data = S.dataset(20, seed=1)
    assert [img['id'] for img in data['images']] == list(range(1, 21))
    anns = {}
    for ann in data['annotations']:
        anns.setdefault(ann['image_id'], []).append(
            (ann['category_id'], ann['bbox']))
    for index in (11, 19):
        assert anns[index + 1] == anns[index % 8 + 1]
        img, drawn, _ = S.image(index, S.categories(1), seed=1,
                                with_preds=False)
        assert img['id'] == index + 1
        assert [(a['category_id'], a['bbox']) for a in drawn] == \
            anns[index + 1]
    assert len({a['id'] for a in data['annotations']}) == \
        len(data['annotations'])
    D.prediction_cache(20, seed=1, procs=0)
    preds = dict(D.predictions([3, 11, 19], seed=1))
    for index in (11, 19):
        assert (preds[index]['bboxes'] == preds[3]['bboxes']).all()
        assert preds[index]['rles'][0] == preds[3]['rles'][0]

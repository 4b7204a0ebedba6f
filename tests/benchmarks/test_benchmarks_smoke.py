# Copyright (c) icar_dense contributors. All rights reserved.
"""Benchmarks (issue #8): each script runs in --quick mode and prints valid
JSON; the large-vocabulary prediction paths they measure give the results
of the dense mmdet / mmseg computations.

No timing is asserted here: timings are what the benchmarks report.
"""
import copy
import io
import json
import math
import os.path as osp
import sys
from contextlib import redirect_stdout

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, check_ok, run_tool

sys.path.insert(0, osp.join(REPO, 'benchmarks'))

import _common as C  # noqa: E402

from icar_dense.models.heads.large_vocab import (_per_class_nms,  # noqa: E402
                                                 chain_matrices, dense_argmax,
                                                 screen_candidates,
                                                 screen_dtype_info,
                                                 topk_multiclass_nms)


@pytest.fixture(scope='module', autouse=True)
def _bench_work_dir(tmp_path_factory):
    # generated embeddings files and tokenizers go to a temporary folder
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ICAR_BENCH_WORK_DIR',
                  str(tmp_path_factory.mktemp('bench_work')))
        yield


# one torch thread: tests/conftest.py
pytestmark = pytest.mark.usefixtures('one_thread')


# ----------------------------------------------------------------------
# detection: NMS on the top-K scores == mmdet's multiclass_nms
# ----------------------------------------------------------------------
def _det_problem(num_rois, num_classes, seed, size=64.0, peaked=True):
    g = torch.Generator().manual_seed(seed)
    # boxes around a few centres so that NMS has work to do
    centres = torch.rand(6, 2, generator=g) * size
    pick = torch.randint(0, 6, (num_rois, ), generator=g)
    xy = centres[pick] + torch.randn(num_rois, 2, generator=g) * 3
    wh = 8 + torch.rand(num_rois, 2, generator=g) * 12
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    # NMS compares IoUs with 0.5, computed with other rounding in each
    # implementation (~1e-7): every pair is kept clear of the threshold so
    # that kept indices and labels (integers) can be compared exactly. The
    # scores are the same tensor for both, so their order is exact.
    from torchvision.ops import box_iou
    assert ((box_iou(boxes, boxes) - 0.5).abs() > 1e-5).all(), \
        'a box pair has IoU within 1e-5 of the NMS threshold: change seed'
    logits = torch.randn(num_rois, num_classes + 1, generator=g)
    if peaked:
        logits[torch.arange(num_rois), pick * 3 % num_classes] += 4
    return boxes, logits.softmax(-1)


@pytest.mark.parametrize('score_thr,max_num,init_k', [
    (0.0, 100, None),   # 12,000 candidates: mmdet's per-class NMS loop
    (0.02, 100, None),  # a few thousand: mmdet's offset trick
    (0.0, 100, 16),     # too few survivors at first: K grows
    (0.0, 1000, None),  # fewer detections than max_num: all candidates
])
def test_topk_nms_matches_mmdet_multiclass_nms(score_thr, max_num, init_k):
    from mmdet.models.layers import multiclass_nms
    boxes, scores = _det_problem(300, 40, seed=1)
    nms = dict(type='nms', iou_threshold=0.5)
    ref_dets, ref_labels = multiclass_nms(boxes, scores, score_thr, nms,
                                          max_num)
    stats = {}
    dets, labels = topk_multiclass_nms(
        boxes, scores, score_thr, nms, max_num, init_k=init_k, stats=stats)
    assert dets.shape == ref_dets.shape and dets.shape[0] > 0
    torch.testing.assert_close(dets, ref_dets, rtol=0, atol=1e-5)
    assert torch.equal(labels, ref_labels)
    if init_k is not None:
        assert stats['rounds'] > 1  # the growth path was taken


@pytest.mark.parametrize('loop_min_group', [2, 64, 10**9])
def test_per_class_nms_matches_mmcv_batched_nms(loop_min_group):
    # every group through mmcv nms, mixed, every group vectorised
    from mmcv.ops import batched_nms
    boxes, scores = _det_problem(400, 6, seed=9)
    flat = scores[:, :-1].reshape(-1)
    top, inds = flat.topk(1500)
    cand_boxes, labels = boxes[inds // 6], inds % 6
    ref, ref_keep = batched_nms(cand_boxes, top, labels,
                                dict(type='nms', iou_threshold=0.5))
    dets, keep = _per_class_nms(cand_boxes, top, labels, 0.5, False,
                                loop_min_group=loop_min_group)
    torch.testing.assert_close(dets, ref, rtol=0, atol=1e-6)
    assert torch.equal(labels[keep], labels[ref_keep])


def test_topk_nms_large_vocabulary_equals_full_per_class_nms():
    # 200 RoIs x 5000 classes: the reference runs per-class NMS on every
    # score above the threshold (mmdet's own fp32 label offsets would round
    # the coordinates at this many classes)
    boxes, scores = _det_problem(200, 5000, seed=2)
    flat = scores[:, :-1].reshape(-1)
    inds = (flat > 1e-4).nonzero().view(-1)
    ref_dets, keep = _per_class_nms(boxes[inds // 5000], flat[inds],
                                    inds % 5000, 0.5, False)
    dets, labels = topk_multiclass_nms(boxes, scores, 1e-4,
                                       dict(type='nms', iou_threshold=0.5),
                                       300)
    torch.testing.assert_close(dets, ref_dets[:300], rtol=0, atol=1e-6)
    assert torch.equal(labels, (inds % 5000)[keep][:300])


def test_topk_nms_falls_back_for_soft_nms():
    from mmdet.models.layers import multiclass_nms
    boxes, scores = _det_problem(100, 10, seed=3)
    nms = dict(type='soft_nms', iou_threshold=0.5)
    ref = multiclass_nms(boxes, scores, 0.05, nms, 50)
    out = topk_multiclass_nms(boxes, scores, 0.05, nms, 50)
    torch.testing.assert_close(out[0], ref[0])


def _build_ov_box_head(registry, embeddings):
    return registry.build(
        dict(
            type='OVShared4Conv1FCBBoxHead',
            in_channels=8,
            conv_out_channels=8,
            fc_out_channels=32,
            roi_feat_size=7,
            num_classes=300,
            norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0.] * 4,
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            text_classifier=dict(
                type='TextClassifier',
                embed_dim=C.EMBED_DIM,
                embeddings=embeddings,
                background=True,
                tau=0.03),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False),
            loss_bbox=dict(type='L1Loss'))).eval()


def test_ov_box_head_topk_nms_same_detections(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope

    import icar_dense  # noqa: F401
    path = C.write_embeddings(str(tmp_path / 'emb.pth'), 300)
    # an earlier test may have left another default scope (mmseg)
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = _build_ov_box_head(MODELS, path)
    boxes, _ = _det_problem(120, 1, seed=4)
    rois = torch.cat([torch.zeros(120, 1), boxes.clamp(0, 63)], 1)
    with torch.no_grad():
        cls_score, bbox_pred = head(torch.randn(120, 8, 7, 7))
    cfg = ConfigDict(
        score_thr=1e-4, nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100)
    meta = [dict(img_shape=(64, 64), scale_factor=(1., 1.))]
    outs = {}
    for flag in (True, False):
        head.topk_nms = flag
        outs[flag] = head.predict_by_feat((rois, ), (cls_score, ),
                                          (bbox_pred, ), meta,
                                          rcnn_test_cfg=cfg)[0]
    assert len(outs[True]) == 100
    torch.testing.assert_close(outs[True].bboxes, outs[False].bboxes)
    torch.testing.assert_close(outs[True].scores, outs[False].scores,
                               rtol=0, atol=1e-6)
    assert torch.equal(outs[True].labels, outs[False].labels)


# ----------------------------------------------------------------------
# segmentation: exact argmax == argmax of mmseg's dense logits
# ----------------------------------------------------------------------
def _near_tie_ok(pred, logits, labels_ref, tol=1e-4):
    """Every disagreement is between classes whose logits differ < tol."""
    diff = pred != labels_ref
    if not bool(diff.any()):
        return True
    top2 = logits.topk(2, dim=0).values
    gap = (top2[0] - top2[1])[diff]
    return bool((gap < tol).all())


@pytest.mark.parametrize('num_classes,use_bf16,k,screen',
                         [(300, False, 8, None), (3000, True, 16, 'bfloat16'),
                          (3000, True, 16, 'float32'),
                          (3000, True, 16, 'int8'), (300, True, 2, 'int8'),
                          (300, False, 1, None)])
def test_dense_argmax_equals_brute_force(num_classes, use_bf16, k, screen):
    """Exact against the dense computation; 3000 classes with float32
    forced take the grouped float32 screening (>= 4 * 16 * k classes)."""
    # rough (non-smooth) random embeddings: many bound failures with k=1
    g = torch.Generator().manual_seed(5)
    emb = F.normalize(torch.randn(2 * 9, 2 * 11, 32, generator=g), dim=-1)
    classes = F.normalize(torch.randn(num_classes, 32, generator=g), dim=-1)
    # two window bands per axis (overlapping), padding crop, flip, resize
    rows = chain_matrices([9, 9], [(0, 36), (20, 56)], 56, False, (0, 3),
                          True, 70, False)
    cols = chain_matrices([11, 11], [(0, 44), (30, 74)], 74, False, (2, 0),
                          False, 61, True)
    stats = {}
    # the screening dtype forced: its bound is tested whatever this CPU
    # would choose
    pred = dense_argmax(emb, classes, 20.0, rows, cols, k=k,
                        use_bf16=use_bf16, tile=16, stats=stats,
                        screen_dtype=screen)
    logits = 20.0 * torch.einsum('hwd,cd->chw', emb, classes)
    full = torch.einsum('yh,chw,xw->cyx', rows, logits, cols)
    ref = full.argmax(0)
    assert pred.shape == (70, 61)
    assert _near_tie_ok(pred, full, ref)
    assert (pred == ref).float().mean() > 0.999
    if k == 1:
        assert stats['fallback_pixels'] > 0
        assert stats['screen_dtype'] == 'float32' and stats['screen_k'] == 1
    if screen:
        assert stats['screen_dtype'] == screen


@pytest.mark.parametrize('dtype,dim', [(torch.bfloat16, 64),
                                       (torch.float32, 64), (torch.int8, 64),
                                       (torch.int8, 37)])
def test_screen_candidates_bound_holds(dtype, dim):
    """bfloat16, int8, and float32 at 5000 classes (grouped screening:
    16 strided groups of 16 expanded; 5000 is no multiple of 16, so
    padding classes exist), bound every class left out.  int8 also with
    37 dims (padded to 40 for the integer product) and rows that are not
    unit vectors (its bound uses the actual rounding, not unit norms)."""
    g = torch.Generator().manual_seed(6)
    emb = F.normalize(torch.randn(257, dim, generator=g), dim=-1)
    classes = F.normalize(torch.randn(5000, dim, generator=g), dim=-1)
    unit = dim == 64
    if not unit:
        # one outlier coordinate per row: a coarse per-row scale
        emb = emb * torch.rand(257, 1, generator=g) * 3
        emb[:, 0] += 2.0
    idx, bound = screen_candidates(emb, classes, 12, use_bf16=True,
                                   dtype=dtype)
    assert idx.shape == (257, 12) and bool((idx < 5000).all())
    exact = emb @ classes.t()
    if dtype == torch.float32:
        # the same bound as a topk over all classes (the (k+1)-th value)
        ref = exact.topk(13, dim=1).values[:, 12] + 1e-4
        assert torch.allclose(bound, ref, atol=1e-5)
    outside = torch.ones_like(exact, dtype=torch.bool)
    outside.scatter_(1, idx, False)
    assert bool((exact.masked_fill(~outside, -9).amax(1) <= bound).all())
    if unit:
        # the exact top-3 are always candidates, and the bound is useful:
        # within the reduced precision's margin of the (k+1)-th value
        top3 = exact.topk(3, dim=1).indices
        assert bool(torch.gather(~outside, 1, top3).all())
        slack = bound - exact.topk(13, dim=1).values[:, 12]
        assert float(slack.mean()) < 0.03


def test_screen_dtype_follows_the_device(tmp_path, monkeypatch):
    """The fastest screening dtype by a probe, once per process: bfloat16
    only where the CPU lists native bfloat16 (emulated: ~100x slower than
    float32 on an AVX2 AMD EPYC, so never tried without it), int8 where its
    integer product beats float32 by 20 %, float32 otherwise."""
    from icar_dense.models.heads import screen_dtype as lv
    monkeypatch.delenv('ICAR_SCREEN_DTYPE', raising=False)
    probes = []

    def probe(dtype, device, threads=1):
        probes.append(dtype)
        if dtype == torch.int8 and threads > 1:
            return int8_seconds * int8_scaling
        return {torch.float32: 1.0, torch.bfloat16: bf16_seconds,
                torch.int8: int8_seconds}[dtype]

    int8_scaling = 1.0

    monkeypatch.setattr(lv, '_probe_seconds', probe)
    avx2 = tmp_path / 'avx2'
    avx2.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n')
    amx = tmp_path / 'amx'
    amx.write_text('flags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n')
    for cpuinfo, bf16_seconds, int8_seconds, expected, bf16_probed in (
            (avx2, 0.1, 0.9, 'float32', False),  # int8 not 20 % faster
            (avx2, 0.1, 0.5, 'int8', False),  # AVX512-VNNI, no bf16
            (amx, 0.3, 0.5, 'bfloat16', True),
            (amx, 1.5, 0.6, 'int8', True),  # listed but slow
            (amx, 1.5, 0.9, 'float32', True),
            (tmp_path / 'missing', 0.3, 0.9, 'bfloat16', True)):
        monkeypatch.setattr(lv, '_screen_cache', {})
        probes.clear()
        info = screen_dtype_info('cpu', cpuinfo=str(cpuinfo))
        assert info['name'] == expected, (cpuinfo, info)
        assert (torch.bfloat16 in probes) == bf16_probed
        assert torch.float32 in probes and torch.int8 in probes
        assert 'int8' in info['reason'] and 'float32' in info['reason']
        probes.clear()
        assert screen_dtype_info('cpu', cpuinfo=str(cpuinfo)) is info
        assert not probes  # measured once per process
    # int8 not 20 % faster on one thread but on the screening's threads
    # (an AMD EPYC capped at AVX2: 0.93 and 0.70): int8
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    int8_scaling, bf16_seconds, int8_seconds = 0.7 / 0.93, 0.1, 0.93
    monkeypatch.setattr(lv, '_screen_cache', {})
    info = screen_dtype_info('cpu', cpuinfo=str(avx2))
    assert info['name'] == 'int8' and '2 threads' in info['reason'], info
    int8_scaling = 1.0  # no gain on 2 threads either: float32
    monkeypatch.setattr(lv, '_screen_cache', {})
    assert screen_dtype_info('cpu', cpuinfo=str(avx2))['name'] == 'float32'
    assert lv.cpu_bf16_flags(str(avx2)) == []
    assert lv.cpu_bf16_flags(str(amx)) == ['avx512_bf16', 'amx_bf16']
    monkeypatch.setenv('ICAR_SCREEN_DTYPE', 'float32')
    assert screen_dtype_info('cpu')['name'] == 'float32'
    monkeypatch.setenv('ICAR_SCREEN_DTYPE', 'int8')
    assert screen_dtype_info('cpu')['dtype'] == torch.int8
    monkeypatch.setenv('ICAR_SCREEN_DTYPE', 'half')
    with pytest.raises(ValueError, match='ICAR_SCREEN_DTYPE'):
        screen_dtype_info('cpu')
    # the probe runs on one thread (a loaded machine stalls multi-threaded
    # calls, whatever the dtype) and gives the threads back
    monkeypatch.undo()
    monkeypatch.delenv('ICAR_SCREEN_DTYPE', raising=False)
    threads, calls = torch.get_num_threads(), []
    real_set = torch.set_num_threads

    def set_threads(n):
        calls.append(n)
        real_set(n)

    monkeypatch.setattr(torch, 'set_num_threads', set_threads)
    for dtype in (torch.float32, torch.int8):
        for n in (1, 2):
            calls.clear()
            assert lv._probe_seconds(dtype, torch.device('cpu'), n) > 0
            assert calls == [n, threads]
            assert torch.get_num_threads() == threads
    monkeypatch.setattr(torch, 'set_num_threads', real_set)
    # the benchmarks say which dtype this machine uses
    monkeypatch.setattr(lv, '_screen_cache', {})
    machine = C.machine_info('cpu')
    assert machine['screen_dtype'] in ('float32', 'bfloat16', 'int8')
    assert machine['screen_dtype_reason']


@pytest.fixture(scope='module')
def tiny_segmentor(tmp_path_factory):
    path = C.write_embeddings(
        str(tmp_path_factory.mktemp('seg') / 'emb.pth'), 3000, seed=7)
    cfg = C.seg_cfg(3000, path, tiny=True)
    cfg.model.decode_head.text_classifier.vocabulary = C.synthetic_names(
        3000)
    torch.manual_seed(0)
    model = C.build_model(cfg.model, 'mmseg')
    # sharper features than a random init gives: more classes win
    with torch.no_grad():
        model.decode_head.text_classifier.visual_proj.weight.mul_(30)
    return model


def _seg_case(model, mode, size, meta, num_classes, **large_vocab):
    from mmengine.config import ConfigDict
    from mmseg.structures import SegDataSample
    names = C.synthetic_names(num_classes)
    model.set_vocabulary(names)
    model.test_cfg = ConfigDict(
        mode=mode, crop_size=(64, 64), stride=(43, 43))
    g = torch.Generator().manual_seed(8)
    inputs = torch.randn(1, 3, *size, generator=g)
    samples = [SegDataSample(metainfo=meta)] if meta is not None else None
    with torch.no_grad():
        model.large_vocab = None
        dense = model.predict(inputs, copy.deepcopy(samples))[0]
        model.large_vocab = {
            **model.LARGE_VOCAB_DEFAULTS, 'min_classes': 1, **large_vocab
        }
        fast = model.predict(inputs, copy.deepcopy(samples))[0]
    ref = dense.pred_sem_seg.data[0]
    pred = fast.pred_sem_seg.data[0]
    assert pred.shape == ref.shape
    assert 'seg_logits' not in fast
    assert _near_tie_ok(pred, dense.seg_logits.data, ref)
    assert ref.unique().numel() >= 3  # a meaningful comparison
    return model.large_vocab_stats[0]


@pytest.mark.parametrize('case', ['slide_flip_pad_resize', 'whole',
                                  'no_samples', 'bf16', 'bf16_forced',
                                  'int8_forced', 'fallback'])
def test_segmentor_large_vocab_equals_dense(tiny_segmentor, case,
                                            monkeypatch):
    meta = dict(
        img_shape=(96, 112),
        ori_shape=(120, 100),
        pad_shape=(96, 112),
        padding_size=[0, 8, 0, 4],
        flip=True,
        flip_direction='horizontal')
    if case == 'slide_flip_pad_resize':
        _seg_case(tiny_segmentor, 'slide', (96, 112), meta, 300)
    elif case == 'whole':
        meta.update(flip_direction='vertical')
        _seg_case(tiny_segmentor, 'whole', (96, 112), meta, 300)
    elif case == 'no_samples':
        _seg_case(tiny_segmentor, 'slide', (80, 100), None, 300)
    elif case.startswith(('bf16', 'int8')):
        forced = {'bf16_forced': 'bfloat16', 'int8_forced': 'int8'}
        if case in forced:
            monkeypatch.setenv('ICAR_SCREEN_DTYPE', forced[case])
        stats = _seg_case(
            tiny_segmentor, 'slide', (96, 112), meta, 3000,
            bf16_min_classes=1000)
        # bfloat16 only where this device multiplies it fast
        assert stats['screen_dtype'] == screen_dtype_info('cpu')['name']
        if case in forced:
            assert stats['screen_dtype'] == forced[case]
        k = tiny_segmentor.LARGE_VOCAB_DEFAULTS['bf16_topk']
        # int8 keeps half as many candidates again (a looser bound)
        assert stats['screen_k'] == (k + k // 2 if stats['screen_dtype'] ==
                                     'int8' else k)
    else:
        stats = _seg_case(tiny_segmentor, 'slide', (96, 112), meta, 300,
                          topk=1)
        assert stats['fallback_pixels'] > 0


def test_large_vocab_threshold_and_bad_keys(tiny_segmentor):
    from mmseg.registry import MODELS
    model = tiny_segmentor
    model.set_vocabulary(C.synthetic_names(300))
    model.large_vocab = dict(model.LARGE_VOCAB_DEFAULTS)
    assert not model.uses_large_vocab_path()  # 300 < 1000 classes
    model.set_vocabulary(C.synthetic_names(1500))
    assert model.uses_large_vocab_path()
    with pytest.raises(KeyError, match='unknown large_vocab keys'):
        with C._scope('mmseg'):
            MODELS.build(
                dict(
                    type='ICAREncoderDecoder',
                    large_vocab=dict(top_k=3),
                    backbone=dict(
                        type='ResNetV1c',
                        depth=18,
                        stem_channels=8,
                        base_channels=8,
                        out_indices=(3, )),
                    decode_head=dict(
                        type='FCNHead',
                        in_channels=64,
                        channels=8,
                        num_classes=3)))


# ----------------------------------------------------------------------
# the benchmark scripts: --quick runs print valid JSON
# ----------------------------------------------------------------------
def _run_main(module_name, argv):
    import importlib
    module = importlib.import_module(module_name)
    buf = io.StringIO()
    with redirect_stdout(buf):
        module.main(argv)
    figures = C.parse_json_lines(buf.getvalue())
    assert figures, buf.getvalue()[-2000:]
    for fig in figures:
        assert fig['machine']['cpu'] and fig['machine']['torch']
    return figures


def _check_ratio(fig, base, ours, repeats):
    """``repeats`` timed runs per variant; with one run each, the ratio
    (the median of the paired ratios) is ours / base of those runs."""
    assert set(fig['median_s']) == {base, ours}
    for variant in (base, ours):
        assert len(fig['runs_s'][variant]) == repeats
        assert fig['median_s'][variant] > 0
    assert fig['ratio'] == fig['ratio_median_of_pairs']
    if repeats == 1:
        expected = fig['median_s'][ours] / fig['median_s'][base]
        assert fig['ratio'] == pytest.approx(expected, rel=0.01, abs=1e-3)


def test_bench_vocab_scaling_quick():
    figs = _run_main('bench_vocab_scaling', ['--quick', '--repeats', '1'])
    assert [f['task'] for f in figs] == ['det', 'seg']
    for fig in figs:
        assert fig['classes'] == [1203, 21841]
        _check_ratio(fig, '1203', '21841', repeats=1)


def test_bench_ov_overhead_quick():
    figs = _run_main('bench_ov_overhead', ['--quick', '--repeats', '1'])
    assert figs[0]['figure'] == 'ov_head_overhead'
    _check_ratio(figs[0], 'linear', 'text', repeats=1)
    assert figs[0]['meets_goal'] == (figs[0]['ratio'] <= 1.03)


def test_bench_train_step_quick():
    figs = _run_main('bench_train_step', ['--quick', '--repeats', '1'])
    assert figs[0]['figure'] == 'training_step'
    _check_ratio(figs[0], 'stock', 'ours', repeats=1)
    for losses in figs[0]['last_losses'].values():
        assert all(math.isfinite(v) for v in losses.values())


def test_bench_inmap_quick():
    buf = io.StringIO()
    import bench_inmap
    with redirect_stdout(buf):
        bench_inmap.main(['--quick', '--device', 'cpu', '--repeats', '1'])
    out = json.loads(buf.getvalue())
    assert out['results'][0]['seconds_per_iter'] > 0


def test_run_all_quick_subset(tmp_path):
    out = str(tmp_path / 'results.json')
    proc = check_ok(
        run_tool([
            sys.executable,
            osp.join(REPO, 'benchmarks', 'run_all.py'), '--quick', '--only',
            'inmap', '--json', out
        ],
                 env=dict(OMP_NUM_THREADS='1')))
    data = json.load(open(out))
    assert data['figures'][0]['figure'] == 'inmap'
    assert 'InMaP' in proc.stdout


def test_run_all_text_cache_quick(tmp_path):
    """bench_text_cache.py through run_all: one JSON document with the
    machine, read back into the text-cache figure and its extrapolation."""
    out = str(tmp_path / 'results.json')
    check_ok(run_tool([
        sys.executable, osp.join(REPO, 'benchmarks', 'run_all.py'), '--quick',
        '--only', 'text_cache', '--json', out], env=dict(OMP_NUM_THREADS='1')))
    fig = json.load(open(out))['figures'][0]
    assert fig['figure'] == 'text_cache'
    details = fig['details']
    assert details['prompts'] == details['classes'] * details['templates']
    assert details['encode_s'] > 0 and details['disk_cache_load_s'] > 0
    assert details['machine']['cpu']
    assert details['extrapolated']['prompts'] == 1203 * 80


def test_screen_dtype_with_the_instruction_set_capped(monkeypatch):
    """The bench reports what the probe picks on a CPU of a lower
    instruction set (the libraries' ISA caps, fresh processes)."""
    import platform
    if platform.machine() not in ('x86_64', 'AMD64'):
        assert C.screen_dtype_by_isa() == {}
        return
    caps = dict(ATEN_CPU_CAPABILITY='avx2', ONEDNN_MAX_CPU_ISA='AVX2')
    monkeypatch.setattr(C, 'ISA_CAPS', {'AVX2': caps})
    monkeypatch.setenv('ICAR_SCREEN_DTYPE', 'bfloat16')  # not inherited
    out = C.screen_dtype_by_isa()
    assert list(out) == ['AVX2'] and out['AVX2']['env'] == caps
    # bfloat16 is emulated under AVX2 (~100x float32): never picked
    assert out['AVX2']['dtype'] in ('float32', 'int8'), out
    assert 'probe matmul' in out['AVX2']['reason']


@pytest.mark.parametrize('rows', [1, 16, 17, 40])
def test_int8_product_is_exact(rows):
    """The int8 screening's product equals the int32 one, also for the
    short last block (<= 16 rows, padded for CUDA's kernel)."""
    from icar_dense.models.heads.screen_dtype import _int_mm, _quantise
    g = torch.Generator().manual_seed(rows)
    a = torch.randint(-127, 128, (rows, 40), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (40, 24), generator=g, dtype=torch.int8)
    assert torch.equal(_int_mm(a, b), a.int() @ b.int())
    # quantised rows: |q| <= 127, dims padded to a multiple of 8, and the
    # scale maps the largest entry of each row to 127
    x = torch.randn(rows, 37, generator=g)
    q, scale = _quantise(x)
    assert q.shape == (rows, 40) and bool((q[:, 37:] == 0).all())
    assert int(q.abs().max()) <= 127
    assert torch.equal(q[:, :37].abs().amax(1), torch.full((rows, ), 127,
                                                           dtype=torch.int8))
    assert torch.allclose(q[:, :37].float() * scale, x, atol=float(
        scale.max()) / 2 + 1e-6)

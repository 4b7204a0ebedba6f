"""The usual tools around a run, for all three tasks.

* ``tools/test.py --show-dir DIR`` writes prediction pictures through the
  host library's visualizer (detection, segmentation, action);
* ``tools/browse_dataset.py`` writes pictures of what the pipeline feeds
  the model; for open-vocabulary detection base and novel classes are told
  apart (the training set has no novel instance, the test set does);
* TensorBoard logging switched on from the config (the snippet of
  docs/getting_started.md) writes an events file;
* ``tools/test.py --vocabulary EMB.pth`` with a file written by
  ``tools/build_vocab_embeddings.py`` on a segmentation config gives the same
  result as the same vocabulary encoded on the fly.

The tools run in this process (``runpy``, as ``python tools/X.py`` runs them)
on the shrunk example configs of tests/tools/test_examples.py, dumped to files.
"""
import glob
import json
import os
import os.path as osp
import runpy
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import REPO  # noqa: E402
from data_factory import pipeline_steps  # noqa: E402
from test_examples import (action_data,  # noqa: E402,F401
                           action_example, det_data, det_example, doc_blocks,
                           seg_env, seg_example, unique)

# one torch thread and no config formatting: tests/conftest.py
pytestmark = pytest.mark.usefixtures('fast_cpu')

GETTING_STARTED = osp.join(REPO, 'docs', 'getting_started.md')


def run_tool(name, args, monkeypatch):
    """``python tools/<name> ARGS`` in this process; returns its globals."""
    monkeypatch.setattr(sys, 'argv', [name] + [str(a) for a in args])
    monkeypatch.setattr(sys, 'path', list(sys.path))
    return runpy.run_path(osp.join(REPO, 'tools', name), run_name='__main__')


def browse(args):
    tool = runpy.run_path(
        osp.join(REPO, 'tools', 'browse_dataset.py'), run_name='browse')
    return tool['main']([str(a) for a in args])


def dump(cfg, path):
    cfg.dump(str(path))
    return str(path)


def save_initial_weights(cfg, path):
    """A checkpoint of the freshly initialised model (no training)."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, str(path))
    return str(path)


def image_names(folder):
    return sorted(
        osp.splitext(f)[0] for f in os.listdir(folder)
        if f.endswith(('.jpg', '.png')))


# ---------------------------------------------------------------------------
# tools/test.py --show-dir
# ---------------------------------------------------------------------------
def test_show_dir_detection(det_data, tmp_path, monkeypatch):  # noqa: F811
    cfg = det_example(det_data, str(tmp_path / 'kitchen'), tmp_path / 'w')
    ckpt = save_initial_weights(cfg, tmp_path / 'init.pth')
    config = dump(cfg, tmp_path / 'det.py')
    work = tmp_path / 'test'
    # a relative DIR is relative to WORK_DIR/<timestamp>/, as in mmdet
    run_tool('test.py', [config, ckpt, '--work-dir', work, '--show-dir',
                         'vis'], monkeypatch)
    written = glob.glob(str(work / '*' / 'vis' / '*.jpg'))
    names = sorted(osp.basename(p) for p in written)
    expected = sorted(os.listdir(tmp_path / 'kitchen' / 'val'))
    assert names == expected, names
    for path in written:
        picture = cv2.imread(path)
        source = cv2.imread(str(tmp_path / 'kitchen' / 'val' /
                                osp.basename(path)))
        # ground truth and prediction side by side
        assert picture.shape == (source.shape[0], 2 * source.shape[1], 3)
    print('--show-dir files (det):', sorted(osp.relpath(p, work)
                                            for p in written))


def test_show_dir_segmentation(seg_env, tmp_path, monkeypatch):
    cfg = seg_example(seg_env, str(tmp_path / 'w'))
    ckpt = save_initial_weights(cfg, tmp_path / 'init.pth')
    config = dump(cfg, tmp_path / 'seg.py')
    work = tmp_path / 'test'
    # a relative DIR is relative to WORK_DIR/<timestamp>/, as in mmdet
    run_tool('test.py', [config, ckpt, '--work-dir', work, '--show-dir',
                         'vis'], monkeypatch)
    written = glob.glob(str(work / '*' / 'vis' / '*'))
    images = sorted(os.listdir(osp.join(seg_env['data'], 'images',
                                        'validation')))
    assert sorted(osp.basename(p) for p in written) == images
    for path in written:
        picture = cv2.imread(path)
        source = cv2.imread(osp.join(seg_env['data'], 'images', 'validation',
                                     osp.basename(path)))
        # ground truth and prediction side by side
        assert picture.shape == (source.shape[0], 2 * source.shape[1], 3)
    print('--show-dir files (seg):', sorted(osp.relpath(p, work)
                                            for p in written))


def test_show_dir_action(action_data, tmp_path, monkeypatch):  # noqa: F811
    """Zero-shot action example, tested with the iCAR image model.

    mmaction2 1.2.0's VisualizationHook fails on 3D recognizers (a 5-d
    (views, C, T, H, W) input, and a ``show`` argument ActionVisualizer does
    not take); see docs/troubleshooting.md.  The pictures are the video's
    own frames (the first test clip at the video's size), not the network's
    resized and cropped input."""
    cfg = action_example(action_data, tmp_path / 'w')
    config = dump(cfg, tmp_path / 'action.py')
    work = tmp_path / 'test'
    # a relative DIR is relative to WORK_DIR/<timestamp>/, as in mmdet
    run_tool('test.py', [config, action_data['icar'], '--work-dir', work,
                         '--show-dir', 'vis'], monkeypatch)
    with open(cfg.test_dataloader.dataset.ann_file) as f:
        videos = f.read().split()[::2]
    clip_len = [t for t in pipeline_steps(cfg.test_pipeline)
                if t.type == 'SampleFrames'][0].clip_len
    crop = [t for t in pipeline_steps(cfg.test_pipeline)
            if 'Crop' in t.type][0]
    (show, ) = glob.glob(str(work / '*' / 'vis'))
    samples = sorted(os.listdir(show))
    # one folder per video, named after it (mmaction2's <name>_<step>)
    assert samples == sorted(f'{v}_0' for v in videos), samples
    for video in videos:
        frames = sorted(glob.glob(osp.join(show, f'{video}_0', '*', '*.png')))
        assert len(frames) == clip_len, (video, frames)
        capture = cv2.VideoCapture(osp.join(action_data['video_dir'], video))
        ok, first = capture.read()
        capture.release()
        assert ok
        picture = cv2.imread(frames[0])
        # the whole frame at its own size, not the network's crop
        assert picture.shape[:2] == first.shape[:2], (picture.shape, crop)
    print('--show-dir files (action):', sorted(
        osp.relpath(p, work) for p in glob.glob(str(work / '*' / 'vis' / '*'
                                                    / '*' / '*.png'))))
    # --interval N: every N-th video; an absolute DIR is used as it is
    absolute = tmp_path / 'every_second'
    run_tool('test.py', [config, action_data['icar'], '--work-dir', work,
                         '--show-dir', absolute, '--interval', '2'],
             monkeypatch)
    assert sorted(os.listdir(absolute)) == sorted(
        f'{v}_0' for v in videos[::2])


# ---------------------------------------------------------------------------
# tools/browse_dataset.py
# ---------------------------------------------------------------------------
def test_browse_dataset_detection_marks_novel_classes(det_data,  # noqa: F811
                                                      tmp_path):
    cfg = det_example(det_data, str(tmp_path / 'kitchen'), tmp_path / 'w')
    config = dump(cfg, tmp_path / 'det.py')
    train = browse([config, '--output-dir', tmp_path / 'train'])
    val = browse([config, '--output-dir', tmp_path / 'val', '--phase',
                  'val', '--max-items', 3])
    # novel annotations are dropped from training, present in testing
    assert train['novel_instances'] == 0 and train['base_instances'] > 0
    assert val['novel_instances'] > 0 and val['items'] == 3
    assert image_names(tmp_path / 'train') == sorted(
        osp.splitext(f)[0] for f in os.listdir(tmp_path / 'kitchen' /
                                               'train'))
    assert len(image_names(tmp_path / 'val')) == 3
    # the colours tell the split apart: red (novel) drawn only in val
    tool = runpy.run_path(
        osp.join(REPO, 'tools', 'browse_dataset.py'), run_name='browse')
    red = np.array(tool['NOVEL_COLOUR'][::-1])  # BGR on disk

    def reddish(folder):
        total = 0
        for path in glob.glob(str(folder / '*.jpg')):
            img = cv2.imread(path).astype(int)
            total += int((np.abs(img - red).sum(-1) < 60).sum())
        return total

    assert reddish(tmp_path / 'val') > 10 * max(1, reddish(tmp_path /
                                                           'train'))
    # test pipelines load annotations after Resize (original coordinates)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    assert tool['_annotations_after_resize'](tool['build_dataset'](cfg,
                                                                   'val'))
    assert not tool['_annotations_after_resize'](tool['build_dataset'](
        cfg, 'train'))
    meta, novel = tool['det_meta'](
        dict(classes=('cup', 'teapot'), novel_classes=('teapot', )))
    assert meta['classes'] == ['cup', 'teapot (novel)'] and novel == {
        'teapot'}


def test_browse_dataset_segmentation(seg_env, tmp_path):
    cfg = seg_example(seg_env, str(tmp_path / 'w'))
    config = dump(cfg, tmp_path / 'seg.py')
    stats = browse([config, '--output-dir', tmp_path / 'out', '--phase',
                    'val'])
    images = sorted(os.listdir(osp.join(seg_env['data'], 'images',
                                        'validation')))
    assert image_names(tmp_path / 'out') == [osp.splitext(i)[0]
                                             for i in images]
    assert stats['items'] == len(images)
    assert set(stats['labels']) <= set(range(len(seg_env['classes'])))
    assert len(stats['labels']) >= 2
    # the label map is drawn over the image: the picture differs from it
    first = cv2.imread(str(tmp_path / 'out' / images[0]))
    source = cv2.imread(osp.join(seg_env['data'], 'images', 'validation',
                                 images[0]))
    # the val pipeline loads the label map at the original size
    assert first.shape == source.shape
    assert np.abs(first.astype(int) - source.astype(int)).mean() > 5


def test_browse_dataset_action(action_data, tmp_path):  # noqa: F811
    cfg = action_example(action_data, tmp_path / 'w')
    config = dump(cfg, tmp_path / 'action.py')
    with pytest.raises(SystemExit, match='no train_dataloader'):
        browse([config, '--output-dir', tmp_path / 'out'])
    stats = browse([config, '--output-dir', tmp_path / 'out', '--phase',
                    'test', '--max-items', 4])
    assert stats['labels'] == [0, 1, 2, 3]
    assert image_names(tmp_path / 'out') == sorted(
        osp.splitext(v)[0] for v in action_data['videos'][:4])
    picture = cv2.imread(stats['files'][0])
    # 4 frames of 32 x 32 side by side with 2 px gaps
    assert picture.shape == (32, 4 * 32 + 3 * 2, 3)


# ---------------------------------------------------------------------------
# TensorBoard from the config
# ---------------------------------------------------------------------------
def test_tensorboard_backend_from_config(tiny_ade_root, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    snippet = [b for b in doc_blocks(GETTING_STARTED, 'python')
               if 'TensorboardVisBackend' in b]
    assert len(snippet) == 1
    child = tmp_path / 'tiny_seg_tensorboard.py'
    child.write_text(
        f"_base_ = ['{osp.join(REPO, 'tests/configs/tiny_seg_fcn.py')}']\n" +
        snippet[0])
    cfg = Config.fromfile(str(child))
    assert [b.type for b in cfg.visualizer.vis_backends] == [
        'LocalVisBackend', 'TensorboardVisBackend']
    for key in ('train_dataloader', 'val_dataloader'):
        cfg[key].dataset.data_root = tiny_ade_root
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.visualizer.name = unique('tb_vis')
    cfg.experiment_name = unique('tb')
    RUNNERS.build(cfg).train()
    events = glob.glob(str(tmp_path / 'work' / '*' / 'vis_data' /
                           'events.out.tfevents.*'))
    assert len(events) == 1 and osp.getsize(events[0]) > 0
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = acc.Tags()['scalars']
    assert 'loss' in tags and 'mIoU' in tags, tags
    assert [e.step for e in acc.Scalars('loss')] == [1, 2]


# ---------------------------------------------------------------------------
# tools/test.py --vocabulary EMB.pth (tools/build_vocab_embeddings.py)
# ---------------------------------------------------------------------------
def test_test_tool_with_embeddings_file_on_seg(seg_env, tmp_path,
                                               monkeypatch):
    """Trained seg example, tested with its classes plus a new one: from a
    vocabulary file (text encoder run) and from the embeddings file that
    build_vocab_embeddings.py wrote for it -- same numbers."""
    from mmengine.registry import RUNNERS
    cfg = seg_example(seg_env, str(tmp_path / 'train'))
    RUNNERS.build(cfg).train()
    ckpt = osp.join(cfg.work_dir, 'iter_2.pth')
    config = dump(cfg, tmp_path / 'seg.py')
    with open(osp.join(seg_env['data'], 'vocabulary.txt')) as f:
        lines = f.read().splitlines()
    vocab = tmp_path / 'vocabulary_plus_car.txt'
    vocab.write_text('\n'.join(lines + ['car: a motor vehicle']) + '\n')
    emb = tmp_path / 'emb.pth'
    # the text tower comes from the iCAR file (init_cfg); it stayed frozen
    # in training, so it is also the checkpoint's
    run_tool('build_vocab_embeddings.py', [config, vocab, emb],
             monkeypatch)
    saved = torch.load(str(emb), weights_only=True)
    assert saved['class_names'] == [line.split(':')[0] for line in lines
                                    ] + ['car']
    results = {}
    for tag, value in (('txt', vocab), ('emb', emb)):
        work = tmp_path / f'test_{tag}'
        run_tool('test.py', [config, ckpt, '--work-dir', work,
                             '--vocabulary', value, '--cfg-options',
                             f'visualizer.name={unique("seg_vis")}'],
                 monkeypatch)
        with open(work / 'metrics_test.json') as f:
            results[tag] = json.load(f)['metrics']
    assert 0 <= results['emb']['mIoU'] <= 100
    assert results['emb']['mIoU'] == pytest.approx(results['txt']['mIoU'],
                                                   abs=0.01)
    assert results['emb']['aAcc'] == pytest.approx(results['txt']['aAcc'],
                                                   abs=0.01)


@pytest.mark.parametrize('names', [('tree', 'wall', 'floor'),
                                   ('tree', 'wall', 'sky')])
def test_embeddings_file_on_the_seen_unseen_config(names, seg_env, tmp_path,
                                                   monkeypatch):
    """``--vocabulary EMB.pth`` on the ADE20K seen/unseen config, whose heads
    and metric name unseen classes (training-time split): a vocabulary
    without them must still be testable; with one of them it is reported
    as unseen."""
    from helpers_seg import shrink as shrink_seg
    from test_examples import load_config
    cfg = load_config('configs/seg/icar_swint_upernet_ade20k_ov_split.py')
    object.__setattr__(cfg, '_format_python_code', False)
    cfg = shrink_seg(cfg, seg_env['data'], str(tmp_path / 'w'),
                     seg_env['icar']['path'], seg_env['tok'])
    assert cfg.model.decode_head.unseen_classes == ['sky']
    config = dump(cfg, tmp_path / 'ov_split.py')
    vocab = tmp_path / 'vocabulary.txt'
    vocab.write_text('\n'.join(names) + '\n')
    emb = tmp_path / 'emb.pth'
    run_tool('build_vocab_embeddings.py', [config, vocab, emb], monkeypatch)
    work = tmp_path / 'test'
    # the pre-training file has no UperNet decoder: what is tested here is
    # the vocabulary / metric plumbing, so the partial load is accepted
    run_tool('test.py', [config, seg_env['icar']['path'], '--work-dir', work,
                         '--vocabulary', emb, '--allow-partial-checkpoint',
                         '--cfg-options',
                         f'visualizer.name={unique("seg_vis")}'],
             monkeypatch)
    with open(work / 'metrics_test.json') as f:
        metrics = json.load(f)['metrics']
    assert 0 <= metrics['mIoU'] <= 100
    assert ('mIoU_unseen' in metrics) == ('sky' in names)

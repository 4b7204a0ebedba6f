"""Write pictures of what a config's data pipeline feeds the model.

    python tools/browse_dataset.py CONFIG --output-dir DIR \
        [--phase train|val|test] [--max-items N] [--cfg-options k=v ...]

Like mmdet / mmseg / mmaction2's ``browse_dataset.py``: the dataset of the
chosen phase is built with its pipeline (augmentations included) and every
item is drawn with its ground truth, through the host library's visualizer:

* detection: boxes and masks; with an open-vocabulary split (datasets that
  set ``base_classes`` / ``novel_classes`` in their metainfo, e.g.
  ``OVCocoDataset``, ``OVLVISV1Dataset``) base classes are drawn in green
  and novel classes in red with a ``(novel)`` tag, so one sees that the
  training set holds no novel annotation and the test set does;
* segmentation: the label map over the image (ignored pixels left clear);
* action recognition: the frames of the first clip side by side with the
  label name.

One picture per item is written to DIR (file name = the image / video
name); a summary is printed at the end.
"""
import argparse
import os
import os.path as osp
import sys
import uuid

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

import numpy as np  # noqa: E402

BASE_COLOUR = (34, 180, 34)  # RGB green
NOVEL_COLOUR = (230, 30, 60)  # RGB red
NOVEL_TAG = ' (novel)'
MAX_FRAMES = 8  # frames of a clip put side by side


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Write pictures of what the data pipeline feeds the '
        'model (ground truth drawn over the transformed inputs)',
        allow_abbrev=False)
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--output-dir', required=True, help='folder for the pictures')
    parser.add_argument(
        '--phase', default='train', choices=['train', 'val', 'test'],
        help='which dataloader\'s dataset to browse (default: train)')
    parser.add_argument(
        '--max-items', type=int, default=None,
        help='stop after this many items (default: all)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if args.max_items is not None and args.max_items < 1:
        parser.error('--max-items must be >= 1')
    return args


def build_dataset(cfg, phase):
    from mmengine.registry import DATASETS
    loader = cfg.get(f'{phase}_dataloader')
    if not loader or not loader.get('dataset'):
        have = [p for p in ('train', 'val', 'test')
                if cfg.get(f'{p}_dataloader')]
        raise SystemExit(
            f'browse_dataset: {cfg.filename} has no {phase}_dataloader '
            f'(a test-only config?); use --phase with one of {have}')
    return DATASETS.build(loader.dataset)


def _unique_name(kind):
    return f'browse_{kind}_{uuid.uuid4().hex[:8]}'


def _output_name(data_sample, index, dataset=None, suffix='.jpg'):
    path = data_sample.get('img_path') or data_sample.get('filename')
    if not path and dataset is not None:  # e.g. video samples
        info = dataset.get_data_info(index)
        path = info.get('img_path') or info.get('filename') or info.get(
            'frame_dir')
    if not path:
        return f'{index:06d}{suffix}'
    stem = osp.splitext(osp.basename(path))[0]
    return stem + suffix


def _image(item):
    """The transformed image as RGB uint8 HxWx3 (pipelines give BGR CxHxW)."""
    img = item['inputs'].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(img[..., ::-1]).astype(np.uint8)


def _annotations_after_resize(dataset):
    """Whether the pipeline loads annotations after resizing the image.

    Test pipelines do (metrics use the original size): the ground truth is
    then in original-image coordinates and the picture must be too.
    """
    while not hasattr(dataset, 'pipeline') and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset  # dataset wrappers
    names = [type(t).__name__ for t in getattr(dataset.pipeline,
                                               'transforms', [])]
    loads = [i for i, n in enumerate(names) if 'LoadAnnotations' in n]
    resizes = [i for i, n in enumerate(names) if 'Resize' in n]
    return bool(loads and resizes and min(resizes) < min(loads))


def _image_for(item, data_sample, original_size):
    image = _image(item)
    if original_size:
        import mmcv
        height, width = data_sample.metainfo['ori_shape'][:2]
        if image.shape[:2] != (height, width):
            image = mmcv.imresize(image, (width, height))
    return image


# ---------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------
def det_meta(metainfo):
    """Class names and palette; novel classes tagged and drawn in red."""
    from mmdet.visualization import get_palette
    classes = list(metainfo.get('classes') or [])
    novel = set(metainfo.get('novel_classes') or ())
    if not novel:
        palette = metainfo.get('palette') or get_palette(
            'random', len(classes))
        return dict(classes=classes, palette=list(palette)), novel
    names = [c + NOVEL_TAG if c in novel else c for c in classes]
    palette = [NOVEL_COLOUR if c in novel else BASE_COLOUR for c in classes]
    return dict(classes=names, palette=palette), novel


def browse_det(dataset, args, count):
    from mmdet.models.utils import mask2ndarray
    from mmdet.structures.bbox import BaseBoxes
    from mmdet.visualization import DetLocalVisualizer
    visualizer = DetLocalVisualizer(name=_unique_name('det'))
    meta, novel = det_meta(dataset.metainfo)
    visualizer.dataset_meta = meta
    classes = list(dataset.metainfo.get('classes') or [])
    stats = dict(items=0, base_instances=0, novel_instances=0, files=[])
    original_size = _annotations_after_resize(dataset)
    for index in range(count):
        item = dataset[index]
        data_sample = item['data_samples'].numpy()
        gt = data_sample.gt_instances
        bboxes = gt.get('bboxes', None)
        if isinstance(bboxes, BaseBoxes):
            gt.bboxes = bboxes.tensor
        masks = gt.get('masks', None)
        if masks is not None:
            gt.masks = mask2ndarray(masks).astype(bool)
        data_sample.gt_instances = gt
        for label in np.asarray(gt.labels).tolist():
            name = classes[label] if label < len(classes) else None
            key = 'novel_instances' if name in novel else 'base_instances'
            stats[key] += 1
        out_file = osp.join(args.output_dir, _output_name(data_sample, index))
        visualizer.add_datasample(
            osp.basename(out_file),
            _image_for(item, data_sample, original_size), data_sample,
            draw_pred=False, show=False, out_file=out_file)
        stats['items'] += 1
        stats['files'].append(out_file)
    return stats


# ---------------------------------------------------------------------------
# segmentation
# ---------------------------------------------------------------------------
def browse_seg(dataset, args, count):
    import mmcv
    from mmseg.visualization import SegLocalVisualizer
    visualizer = SegLocalVisualizer(name=_unique_name('seg'), alpha=0.6)
    visualizer.dataset_meta = dict(
        classes=dataset.metainfo['classes'],
        palette=dataset.metainfo['palette'])
    stats = dict(items=0, labels=set(), files=[])
    for index in range(count):
        item = dataset[index]
        data_sample = item['data_samples'].numpy()
        seg = np.asarray(data_sample.gt_sem_seg.data)
        image = _image(item)
        if image.shape[:2] != seg.shape[-2:]:
            # test pipelines load the label map after Resize (metrics use
            # the original size): show the image at the label's size
            image = mmcv.imresize(image, seg.shape[-2:][::-1])
        stats['labels'].update(
            int(v) for v in np.unique(seg)
            if v < len(dataset.metainfo['classes']))
        out_file = osp.join(args.output_dir, _output_name(data_sample, index))
        visualizer.add_datasample(
            osp.basename(out_file), image, data_sample,
            draw_gt=True, draw_pred=False, show=False, out_file=out_file)
        stats['items'] += 1
        stats['files'].append(out_file)
    stats['labels'] = sorted(stats['labels'])
    return stats


# ---------------------------------------------------------------------------
# action recognition
# ---------------------------------------------------------------------------
def _find_vocabulary(node):
    if isinstance(node, dict):
        if node.get('type') == 'TextClassifier':
            return node.get('vocabulary')
        values = node.values()
    elif isinstance(node, (list, tuple)):
        values = node
    else:
        return None
    for value in values:
        found = _find_vocabulary(value)
        if found is not None:
            return found
    return None


def action_class_names(dataset, cfg):
    """Label names: the dataset's, else the text classifier's vocabulary."""
    names = (dataset.metainfo or {}).get('classes')
    if names:
        return list(names)
    vocabulary = _find_vocabulary(cfg.get('model'))
    if vocabulary is None:
        return None
    from icar_dense.models.text import load_vocabulary
    try:
        return list(load_vocabulary(vocabulary).names)
    except (ValueError, FileNotFoundError, KeyError):
        return None


def clip_frames(inputs):
    """(views, C, T, H, W) or (views, C, H, W) uint8 -> list of HxWx3."""
    array = inputs.numpy() if hasattr(inputs, 'numpy') else inputs
    if array.ndim == 5:  # NCTHW: the first view (clip x crop)
        frames = array[0].transpose(1, 2, 3, 0)
    elif array.ndim == 4:  # NCHW: every sampled frame
        frames = array.transpose(0, 2, 3, 1)
    else:
        raise ValueError(f'browse_dataset: unexpected video input shape '
                         f'{tuple(array.shape)}')
    if len(frames) > MAX_FRAMES:
        keep = np.linspace(0, len(frames) - 1, MAX_FRAMES).round()
        frames = frames[keep.astype(int)]
    return [np.clip(f, 0, 255).astype(np.uint8) for f in frames]


def browse_action(dataset, args, count, cfg):
    import mmcv
    from mmengine.visualization import Visualizer
    names = action_class_names(dataset, cfg)
    visualizer = Visualizer(name=_unique_name('action'))
    stats = dict(items=0, labels=[], files=[])
    for index in range(count):
        item = dataset[index]
        data_sample = item['data_samples']
        frames = clip_frames(item['inputs'])
        gap = np.full((frames[0].shape[0], 2, 3), 255, np.uint8)
        strip = np.concatenate(
            [x for f in frames for x in (f, gap)][:-1], axis=1)
        label = int(np.asarray(data_sample.gt_label).reshape(-1)[0])
        text = f'label {label}'
        if names is not None and 0 <= label < len(names):
            text += f': {names[label]}'
        visualizer.set_image(strip)
        visualizer.draw_texts(
            text, np.array([2, 2]), font_sizes=max(8, strip.shape[0] // 8),
            colors='white', bboxes=dict(facecolor='black', alpha=0.6))
        out_file = osp.join(args.output_dir,
                            _output_name(data_sample, index, dataset))
        mmcv.imwrite(visualizer.get_image()[..., ::-1], out_file)
        stats['items'] += 1
        stats['labels'].append(label)
        stats['files'].append(out_file)
    return stats


def main(argv=None):
    args = parse_args(argv)
    # heavy imports only once the arguments are known to be good
    import icar_dense  # noqa: F401  (compat fixes, lazy registration)
    from icar_dense.engine import merge_cfg_options, task_scope
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)
    scope = task_scope(cfg)
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    dataset = build_dataset(cfg, args.phase)
    os.makedirs(args.output_dir, exist_ok=True)
    count = len(dataset)
    if args.max_items is not None:
        count = min(count, args.max_items)
    if scope == 'mmdet':
        stats = browse_det(dataset, args, count)
        detail = (f'{stats["base_instances"]} base and '
                  f'{stats["novel_instances"]} novel instances')
    elif scope == 'mmseg':
        stats = browse_seg(dataset, args, count)
        detail = f'labels present: {stats["labels"]}'
    elif scope == 'mmaction':
        stats = browse_action(dataset, args, count, cfg)
        detail = f'labels: {stats["labels"]}'
    else:
        raise SystemExit(f'browse_dataset: unsupported default_scope '
                         f'{scope!r}')
    print(f'browse_dataset: {args.phase} set of {cfg.filename}: wrote '
          f'{stats["items"]} of {len(dataset)} items to {args.output_dir} '
          f'({detail})')
    return stats


if __name__ == '__main__':
    main()

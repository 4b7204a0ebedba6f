# Copyright (c) icar_dense contributors. All rights reserved.
"""Training step: our LVIS open-vocabulary config vs mmdet's stock Swin-T
Mask R-CNN, at equal size.

Figure 5 of issue #8.  One iteration (``model.train_step``: data
preprocessor, forward, losses, backward, AdamW step with each config's own
``optim_wrapper``) of

* ``stock``: mmdet's ``configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``
  (from the installed mmdet) with 1203 classes -- ``Shared2FCBBoxHead``
  with a linear classifier and class-specific boxes, class-specific masks;
* ``ours``: ``configs/det/icar_swint_lvis_ov.py`` -- 4conv1fc box head with
  the text classifier (frozen 12-layer RoBERTa text tower, 64 wide, whose
  prompt embeddings are encoded once in the warm-up and cached; each step
  draws one of 2 templates per class), 866 trained (base) classes of 1203,
  class-agnostic boxes and masks,

both with Swin-T at the same input (``--size``, default 512 x 512, batch 1:
one synthetic image with 6 boxes and their masks), random weights, side by
side in one process (warm-up, then stock / ours / stock / ours ...).  Peak
memory: ``ru_maxrss`` of a fresh process per config running two steps
(CPU), ``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --quick
    python benchmarks/bench_train_step.py --device cuda --amp
"""
import argparse
import copy
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

SCRIPT = osp.abspath(__file__)
BASE_CLASSES = 866
# prompts per class of the cached text tower (one drawn per class per step)
TEMPLATES = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    # 3 rounds: a reported ratio (no target); more rounds narrow nothing
    # that a decision depends on
    C.common_args(parser, size=512, repeats=3)
    parser.add_argument('--classes', type=int, default=C.LVIS_CLASSES)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--worker', action='store_true', help='internal')
    parser.add_argument('--which', default='ours', help='internal (worker)')
    args = parser.parse_args(argv)
    if args.quick:
        args.size = min(args.size, 96)
        args.repeats = min(args.repeats, 2)
        args.no_memory = True
    return args


def stock_cfg(args):
    import mmdet
    from mmengine.config import Config
    path = osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'configs', 'swin',
        'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    cfg = Config.fromfile(path)
    model = cfg.model
    model.backbone.init_cfg = None
    model.roi_head.bbox_head.num_classes = args.classes
    model.roi_head.mask_head.num_classes = args.classes
    if args.quick:
        C.shrink_swin(model.backbone)
        model.backbone.pop('arch', None)
        model.neck.in_channels = [16, 32, 64, 128]
        model.neck.out_channels = 32
        model.rpn_head.in_channels = model.rpn_head.feat_channels = 32
        for key in ('bbox_roi_extractor', 'mask_roi_extractor'):
            model.roi_head[key].out_channels = 32
        model.roi_head.bbox_head.in_channels = 32
        model.roi_head.bbox_head.fc_out_channels = 64
        mask = model.roi_head.mask_head
        mask.in_channels = mask.conv_out_channels = 32
        mask.num_convs = 1
    return cfg, osp.relpath(path, osp.dirname(osp.dirname(mmdet.__file__)))


def ours_cfg(args):
    from icar_dense.models.text import get_templates
    names = C.synthetic_names(args.classes)
    tc = C.small_roberta_classifier(names,
                                    get_templates('imagenet80')[:TEMPLATES],
                                    C.work_dir('train_step'))
    cfg = C.det_ov_cfg(args.classes, tc, args.size, tiny=args.quick)
    cfg.model.roi_head.bbox_head.train_classes = names[:BASE_CLASSES]
    return cfg, C.DET_CONFIG


def build(which: str, args):
    from mmengine.optim import build_optim_wrapper
    cfg, path = (stock_cfg if which == 'stock' else ours_cfg)(args)
    model = C.build_model(cfg.model, 'mmdet').to(args.device).train()
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if args.amp:
        optim_cfg.type = 'AmpOptimWrapper'
    with C._scope('mmdet'):
        optim = build_optim_wrapper(model, optim_cfg)
    return model, optim, path


def train_batch(size: int, device: str, seed: int = 0) -> dict:
    """One synthetic image with 6 boxes (base-class labels) and masks."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, size, size), generator=g,
                        dtype=torch.uint8)
    xy = torch.rand(6, 2, generator=g) * size * 0.6
    wh = (0.15 + torch.rand(6, 2, generator=g) * 0.25) * size
    boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)
    masks = np.zeros((6, size, size), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(size, size),
            ori_shape=(size, size),
            scale_factor=(1.0, 1.0),
            flip=False))
    sample.gt_instances = InstanceData(
        bboxes=boxes,
        labels=torch.randint(0, BASE_CLASSES, (6, ), generator=g),
        masks=BitmapMasks(masks, size, size))
    return dict(inputs=[img.to(device)], data_samples=[sample])


def step_fn(model, optim, batch):

    def run():
        return model.train_step(copy.deepcopy(batch), optim)

    return run


def worker(args) -> None:
    C.setup(args)
    model, optim, _ = build(args.which, args)
    batch = train_batch(args.size, args.device)
    run = step_fn(model, optim, batch)
    C.emit([C.peak_memory_record(run, args.device, which=args.which)])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    C.setup(args)
    memory = {}
    if not args.no_memory:
        specs = [(SCRIPT, [
            '--which', which, '--size',
            str(args.size), '--device', args.device, '--classes',
            str(args.classes), *(['--amp'] if args.amp else [])
        ]) for which in ('stock', 'ours')]
        memory = dict(zip(('stock', 'ours'), C.run_parallel(specs, 2)))
    stock, stock_optim, stock_path = build('stock', args)
    ours, ours_optim, ours_path = build('ours', args)
    batch = train_batch(args.size, args.device)
    losses = {}

    def record(name, fn):

        def run():
            losses[name] = {
                k: round(float(torch.as_tensor(v).detach()), 4)
                for k, v in fn().items() if 'loss' in k
            }

        return run

    times = C.interleaved(
        {
            'stock': record('stock', step_fn(stock, stock_optim, batch)),
            'ours': record('ours', step_fn(ours, ours_optim, batch))
        }, args.repeats, args.warmup, args.device)
    fig = dict(
        figure='training_step',
        stock_config=stock_path,
        ours_config=osp.relpath(ours_path, C.REPO),
        input=f'{args.size}x{args.size}, batch 1, 6 boxes with masks',
        classes=args.classes,
        backbone='Swin-T (random init)',
        amp=args.amp,
        goal='ratio and peak memory reported (no target)',
        **C.ratio_figure(times, 'stock', 'ours'))
    if memory:
        fig['memory'] = memory
        if all('peak_rss_mb' in m for m in memory.values()):
            fig['peak_rss_ratio'] = round(
                memory['ours']['peak_rss_mb'] /
                memory['stock']['peak_rss_mb'], 3)
            fig['memory_method'] = (
                'resource.getrusage(RUSAGE_SELF).ru_maxrss of a fresh '
                'process per config (build + 2 steps)')
    fig['last_losses'] = losses
    fig['machine'] = C.machine_info(args.device)
    fig['quick'] = args.quick
    C.emit([fig], [[
        'training step', fig['ratio'], fig['median_s']['stock'],
        fig['median_s']['ours'],
        fig.get('peak_rss_ratio', '-')
    ]], ['figure', 'ratio ours/stock', 'stock s', 'ours s', 'peak RSS ratio'])


if __name__ == '__main__':
    main()

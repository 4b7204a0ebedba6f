"""Shared pieces of the segmentation tests (this module holds no tests).

* a tiny official-layout iCAR checkpoint (Swin + visual projection + RoBERTa
  text tower) written with ``icar_layout`` -- the converter's independent
  inverse -- from a tiny Swin and a tiny RoBERTa with a real byte-level BPE;
* :func:`shrink`, the overrides that make a public full-size config train /
  test in seconds: tiny Swin, tiny RoBERTa, 32 px crops, 2 iterations, the
  tiny ADE20K set of ``tests/data_factory.py``.
"""
import copy
import os
import uuid

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch  # noqa: E402
from helpers_text import (build_tokenizer_dir,  # noqa: E402
                          tiny_roberta_encoder_cfg)
from icar_layout import icar_checkpoint  # noqa: E402

# the first five ADE20K classes: data_factory writes labels 1..5
CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')
TINY_UNSEEN = ['sky']
# two blocks in stage 1: the checkpoint then holds the authors' shift mask
# (atten_mask_matrix) of an odd block, as a real one does
TINY_SWIN = dict(
    arch=None,
    embed_dims=16,
    depths=(1, 2, 1, 1),
    num_heads=(1, 1, 1, 1),
    window_size=3,
    drop_path_rate=0.)
WIDTHS = [16, 32, 64, 128]
EMBED_DIM = 256
CROP = (32, 32)
PUBLIC_CONFIGS = [
    'configs/seg/icar_swinb_upernet_ade20k_160k.py',
    'configs/seg/icar_swinb_upernet_ade20k_zeroshot.py',
    'configs/seg/icar_swinb_upernet_ade20k_ov_split.py',
    'configs/seg/icar_swint_upernet_ade20k_160k.py',
    'configs/seg/icar_swint_upernet_ade20k_zeroshot.py',
    'configs/seg/icar_swint_upernet_ade20k_ov_split.py',
]


def make_tokenizer(folder):
    texts = [f'a photo of a {c}.' for c in CLASSES]
    texts += ['a wall of a building under the sky, a floor and a tree.']
    return build_tokenizer_dir(folder, extra_texts=texts)


def make_icar_checkpoint(path, tokenizer_dir, seed=0):
    """Write a tiny official-layout iCAR file; return its parts."""
    from icar_dense.models.backbones import ICARSwinTransformer
    from icar_dense.models.text import RobertaTextEncoder
    torch.manual_seed(seed)
    swin = ICARSwinTransformer(**TINY_SWIN, out_indices=(0, 1, 2, 3))
    swin.init_weights()
    for name, param in swin.named_parameters():
        if 'norm' in name:  # non-trivial norms, so a wrong mapping shows
            param.data.normal_()
    cfg = dict(tiny_roberta_encoder_cfg(tokenizer_dir, embed_dim=EMBED_DIM))
    cfg.pop('type')
    text = RobertaTextEncoder(**cfg)
    proj = torch.randn(EMBED_DIM, WIDTHS[-1])
    ckpt = icar_checkpoint(swin.state_dict(), 3, proj, text.state_dict())
    torch.save(ckpt, path)
    return dict(path=str(path), swin=swin.state_dict(), proj=proj,
                text=text.state_dict())


def _resize_pipeline(pipeline):
    # ADE20K's (2048, 512) scale -> short side 32 (train, before the random
    # ratio and the 32 px crop) / 48 (test: 2 x 2 slide windows of 32)
    for t in pipeline:
        if t.get('type') in ('RandomResize', 'Resize') and \
                tuple(t.get('scale') or ()) == (2048, 512):
            short = 32 if t['type'] == 'RandomResize' else 48
            t['scale'] = (128, short)
        if t.get('type') == 'RandomCrop':
            t['crop_size'] = CROP


def _walk(node, fn):
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, fn)


def shrink(cfg, data_root, work_dir, ckpt_path, tokenizer_dir,
           classes=CLASSES, unseen=TINY_UNSEEN):
    """Overrides for a public config: same types, tiny sizes, tiny data."""
    cfg = copy.deepcopy(cfg)
    model = cfg.model
    model.backbone.update(TINY_SWIN)
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=ckpt_path)
    head = model.decode_head
    if head.type == 'ICARUPerHead':
        head.update(in_channels=WIDTHS, channels=16)
    else:  # zero-shot: the last stage, projected per pixel
        head.update(in_channels=WIDTHS[-1], channels=WIDTHS[-1])
        head.text_classifier.in_channels = WIDTHS[-1]
    head.num_classes = len(classes)
    tc = head.text_classifier
    tc.text_encoder = tiny_roberta_encoder_cfg(tokenizer_dir,
                                               embed_dim=EMBED_DIM)
    tc.vocabulary = list(classes)
    tc.init_cfg.checkpoint = ckpt_path
    if model.get('auxiliary_head'):
        model.auxiliary_head.update(
            in_channels=WIDTHS[2], channels=8, num_classes=len(classes))
    for part in (head, model.get('auxiliary_head') or {}):
        if part.get('unseen_classes'):
            part['unseen_classes'] = list(unseen)
    if model.data_preprocessor.get('size'):
        model.data_preprocessor.size = CROP
    model.test_cfg.update(crop_size=CROP, stride=(21, 21))

    def data(node):
        if 'pipeline' in node and isinstance(node['pipeline'], list):
            _resize_pipeline(node['pipeline'])
        if node.get('type') in ('ADE20KDataset', 'ADE20KSeenDataset'):
            node['data_root'] = data_root
            node['metainfo'] = dict(classes=tuple(classes))
            if node.get('unseen_classes'):
                node['unseen_classes'] = list(unseen)
        if node.get('type') == 'SeenUnseenIoUMetric':
            node['unseen_classes'] = list(unseen)

    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator', 'test_evaluator'):
        if cfg.get(key):
            _walk(cfg[key], data)
            if key.endswith('dataloader'):
                cfg[key].update(num_workers=0, persistent_workers=False)
    for key in ('train_pipeline', 'test_pipeline'):
        if cfg.get(key):
            _resize_pipeline(cfg[key])
    if cfg.get('train_cfg'):
        cfg.train_cfg.update(max_iters=2, val_interval=2)
        cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.env_cfg.cudnn_benchmark = False
    cfg.visualizer.name = f'seg_vis_{uuid.uuid4().hex[:8]}'
    cfg.launcher = 'none'
    return cfg

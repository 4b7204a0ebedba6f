# A first segmentation run on the CPU (docs/getting_started.md): the
# ADE20K UperNet config (icar_swint_upernet_ade20k_160k.py) shrunk to train
# in about a minute on 2 cores, on the 5-class dataset written by
#   python tools/make_tiny_data.py ade20k data/tiny_ade
# Same model family -- iCAR Swin encoder, UperNet with language heads (a
# per-pixel cosine with text embeddings of the class names) -- at toy size:
#   * Swin with 32-d embeddings and depths (1, 1, 1, 1), randomly initialised;
#   * text tower: CLIP's text transformer with CLIP's BPE tokenizer (shipped
#     with mmseg; 64 wide, 2 layers, random weights, frozen): no RoBERTa
#     vocabulary or pretrained weights are needed offline;
#   * 64 x 64 images, 40 iterations.
# The numbers show the pipeline end to end, not what iCAR weights reach.
_base_ = ['./icar_swint_upernet_ade20k_160k.py']

data_root = 'data/tiny_ade'
classes = ('wall', 'building', 'sky', 'floor', 'tree')
num_classes = len(classes)
crop_size = (64, 64)
max_iters = 40

text_classifier = dict(
    _delete_=True,
    type='TextClassifier',
    embed_dim=64,
    text_encoder=dict(
        type='CLIPTextTransformer',
        context_length=32,
        width=64,
        layers=2,
        heads=2,
        embed_dim=64),
    vocabulary=list(classes),
    templates='imagenet80',
    tau=0.05,
    background=False,
    freeze_text_encoder=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=None,
        embed_dims=32,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.,
        init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        pool_scales=(1, 2),
        channels=32,
        num_classes=num_classes,
        text_classifier=text_classifier),
    auxiliary_head=dict(in_channels=128, channels=16,
                        num_classes=num_classes),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=num_classes),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=num_classes),
    dict(type='PackSegInputs')
]
dataset = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters))

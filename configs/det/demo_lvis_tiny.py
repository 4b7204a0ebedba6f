# `make demo`: icar_swinb_lvis_ov.py shrunk to train in a few minutes on two
# CPU cores (tools/demo_lvis.py builds the data and runs it).  Same model
# family and protocol -- Mask R-CNN FPN, iCAR Swin image encoder, text
# classifier with learned background, base classes (LVIS frequency f/c)
# trained, rare ones held out, LVIS metric -- at toy size:
#   * Swin with 32-d embeddings and depths (1, 1, 2, 1), randomly initialised;
#   * text tower: CLIP's text transformer with CLIP's real BPE tokenizer
#     (64 wide, 2 layers, random weights, frozen): no RoBERTa vocabulary or
#     pretrained text weights ship offline;
#   * 6 hand-annotated photographs (demo/README.md), 256 px, 250 iterations.
# With random text weights nothing carries over to the rare classes: their AP
# is a floor, not a result; the run shows the pipeline end to end.
_base_ = ['./icar_swinb_lvis_ov.py']

data_root = 'work_dirs/demo_lvis/data/'
train_ann = data_root + 'annotations/lvis_demo_train.json'
val_ann = data_root + 'annotations/lvis_demo_val.json'
image_size = (256, 256)
num_classes = 14
max_iters = 250

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
    ]),
    backbone=dict(
        arch=None,
        embed_dims=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        window_size=7,
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        mask_roi_extractor=dict(out_channels=64),
        bbox_head=dict(
            in_channels=64,
            conv_out_channels=64,
            fc_out_channels=256,
            norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
            num_classes=num_classes,
            train_classes=dict(ann_file=val_ann, frequencies=('f', 'c')),
            text_classifier=dict(
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
                vocabulary=val_ann,
                descriptions=True,
                templates='imagenet80',
                tau=0.03,
                background=True,
                freeze_text_encoder=True)),
        mask_head=dict(
            in_channels=64,
            conv_out_channels=64,
            num_convs=2,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.7, 1.3),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset=dict(
            data_root=data_root,
            ann_file='annotations/lvis_demo_train.json',
            data_prefix=dict(img=''),
            pipeline=train_pipeline)))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/lvis_demo_val.json',
        data_prefix=dict(img=''),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# tools/test.py --tta: flip x 3 scales around the demo's 256 px
tta_scales = [(224, 224), (256, 256), (288, 288)]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=s, keep_ratio=True)
             for s in tta_scales],
            [dict(type='RandomFlip', prob=1.),
             dict(type='RandomFlip', prob=0.)],
            [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
            [dict(
                type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                           'scale_factor', 'flip', 'flip_direction'))]
        ])
]
# tools/demo_lvis.py adds the LVIS AP over the base and over the novel
# categories (LVISEval restricted to each group) to these numbers
val_evaluator = dict(ann_file=val_ann)
test_evaluator = val_evaluator

train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=25),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=25,
        end=max_iters,
        T_max=max_iters - 25,
        eta_min=1e-5)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)

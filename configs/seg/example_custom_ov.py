# Semantic segmentation on your own ADE20K-format dataset with the
# open-vocabulary pixel classifier (walk-through: docs/new_task.md).
# Everything is inherited from the public iCAR Swin-T UperNet recipe
# (icar_swint_upernet_ade20k_160k.py: 512x512 crops, AdamW, 80 prompt
# templates); only three things change, and the RoBERTa text tower, which
# that recipe trains, stays frozen here (open vocabulary, see 2.):
#   1. the dataset: images + label maps in the ADE20K layout under data_root
#      (label 0 = unlabelled, ignored; classes are 1..N);
#   2. the vocabulary file: the N class names in label order, one per line,
#      "name: description" allowed -- the text encoder turns them into the
#      pixel classifier, so tools/test.py --vocabulary can later segment
#      classes that were never annotated.  `classes` below is the one
#      source of the label order: the file is checked against it by name
#      when the model is built (an error names both and the first label
#      where they differ);
#   3. the schedule: 20k iterations (a small dataset).
# Layout expected under data_root:
#   images/training/*.jpg       annotations/training/*.png
#   images/validation/*.jpg     annotations/validation/*.png
#   vocabulary.txt
#   python tools/train.py configs/seg/example_custom_ov.py
#   python tools/test.py configs/seg/example_custom_ov.py \
#       work_dirs/example_custom_ov/iter_20000.pth --show-dir vis
_base_ = ['./icar_swint_upernet_ade20k_160k.py']

# 1. the dataset -----------------------------------------------------------
data_root = 'data/streets/'
classes = ('road', 'sidewalk', 'building', 'vegetation', 'sky')
# BaseSegDataset takes any class names (ADE20KDataset only ADE's 150)
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
# the ADE20K recipe's pipelines, with the label maps checked against these
# classes (CheckSegMap: a label outside 0..N-1 other than 255, or a map of
# another size than its image, is an error naming the file)
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=len(classes)),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=len(classes)),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/training',
            seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ], [dict(type='LoadAnnotations')],
            [dict(type='CheckSegMap', num_classes=len(classes))],
            [dict(type='PackSegInputs')]
        ])
]

# 2. the vocabulary --------------------------------------------------------
vocabulary = data_root + 'vocabulary.txt'
num_classes = len(classes)
# Text tower: frozen, so that class names never annotated keep iCAR's
# embeddings (training it would move only the annotated ones) and no AdamW
# state is spent on it (RoBERTa-base: 1491 MB per GPU saved).
model = dict(
    decode_head=dict(
        num_classes=num_classes,
        text_classifier=dict(
            vocabulary=dict(
                _delete_=True,  # replaces the base config's class list
                source=vocabulary,
                classes=classes,
                classes_from='{{ fileBasename }}: classes'),
            freeze_text_encoder=True)),
    auxiliary_head=dict(num_classes=num_classes))

# 3. the schedule: 20k iterations, validation and checkpoints every 2k -----
max_iters = 20000
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=2000)
default_hooks = dict(
    checkpoint=dict(interval=2000, max_keep_ckpts=2, save_best='mIoU'))

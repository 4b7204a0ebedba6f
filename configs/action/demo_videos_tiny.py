# A first video run on the CPU (docs/getting_started.md): the Kinetics-400
# fine-tuning config (icar_swint_k400_finetune.py) shrunk to train in about
# a minute on 2 cores, on the 4-class clips written by
#   python tools/make_tiny_data.py videos data/tiny_videos
# Same model family -- iCAR Swin inflated to a video Swin, the text
# classifier as the recognizer's head (class names -> text embeddings) --
# at toy size:
#   * video Swin with 16-d embeddings, 2x2x2 windows, randomly initialised;
#   * text tower: CLIP's text transformer with CLIP's BPE tokenizer (shipped
#     with mmseg; 64 wide, 2 layers, random weights, frozen);
#   * 4-frame clips at 32 x 32, 8 training videos, 6 epochs.
# The numbers show the pipeline end to end, not what iCAR weights reach.
_base_ = ['./icar_swint_k400_finetune.py']

data_root = 'data/tiny_videos/'
classes_file = data_root + 'classnames.txt'
num_classes = 4
max_epochs = 6
width = 128  # 16-d embeddings doubled over 3 stages

model = dict(
    backbone=dict(
        arch=None,
        embed_dims=16,
        depths=(1, 1, 2, 1),
        num_heads=(1, 1, 2, 2),
        window_size=(2, 2, 2),
        drop_path_rate=0.,
        pretrained=None),
    cls_head=dict(
        in_channels=width,
        num_classes=num_classes,
        dropout_ratio=0.,
        text_classifier=dict(
            _delete_=True,
            type='TextClassifier',
            in_channels=width,
            embed_dim=64,
            text_encoder=dict(
                type='CLIPTextTransformer',
                context_length=32,
                width=64,
                layers=2,
                heads=2,
                embed_dim=64),
            vocabulary=classes_file,
            templates='kinetics28',
            tau=0.05,
            background=False,
            freeze_text_encoder=True)))

file_client_args = dict(io_backend='disk')


def _load(num_clips, test_mode):
    return dict(
        type='SafeLoad',
        transforms=[
            dict(type='DecordInit', **file_client_args),
            dict(
                type='SampleFrames',
                clip_len=4,
                frame_interval=2,
                num_clips=num_clips,
                test_mode=test_mode),
            dict(type='DecordDecode'),
        ])


train_pipeline = [
    _load(1, False),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    _load(1, True),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='CenterCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    _load(2, True),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
dataset = dict(
    data_prefix=dict(video=data_root + 'videos'), num_classes=num_classes)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset, ann_file=data_root + 'train_list.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset, ann_file=data_root + 'val_list.txt',
        pipeline=val_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset, ann_file=data_root + 'val_list.txt',
        pipeline=test_pipeline))

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=2),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

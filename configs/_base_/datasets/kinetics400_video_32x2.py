# Kinetics-400 as mmaction2 prepares it: videos in
# data/kinetics400/videos_{train,val}/ and lists `path label` in
# kinetics400_{train,val}_list_videos.txt, decoded with decord.
# Clips of 32 frames sampled every 2 frames; training: short side 256,
# RandomResizedCrop, 224x224, flip; validation: 1 clip, center crop; test:
# 4 clips x 3 crops (224, short side 224), scores averaged by the head.
# Loading runs inside SafeLoad (a corrupt or empty video names its file); the
# lists' labels are checked against the 400 classes when the dataset is built.
_base_ = ['./video_swin_test_view.py']
dataset_type = 'ValidatedVideoDataset'
num_classes = 400
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
ann_file_test = 'data/kinetics400/kinetics400_val_list_videos.txt'

file_client_args = dict(io_backend='disk')
train_pipeline = [
    dict(
        type='SafeLoad',
        transforms=[
            dict(type='DecordInit', **file_client_args),
            dict(
                type='SampleFrames',
                clip_len=32,
                frame_interval=2,
                num_clips=1),
            dict(type='DecordDecode'),
        ]),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(
        type='SafeLoad',
        transforms=[
            dict(type='DecordInit', **file_client_args),
            dict(
                type='SampleFrames',
                clip_len=32,
                frame_interval=2,
                num_clips=1,
                test_mode=True),
            dict(type='DecordDecode'),
        ]),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = {{_base_.test_pipeline}}

train_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        num_classes=num_classes,
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        num_classes=num_classes,
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root_val),
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        num_classes=num_classes,
        ann_file=ann_file_test,
        data_prefix=dict(video=data_root_val),
        pipeline=test_pipeline,
        test_mode=True))

# top-1 / top-5 accuracy and mean class accuracy
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

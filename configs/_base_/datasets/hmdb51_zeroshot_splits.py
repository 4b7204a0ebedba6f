# HMDB51 zero-shot test on the three official splits, in the layout of
# mmaction2's tools/data/hmdb51: videos in data/hmdb51/videos/
# <class>/*.avi, lists data/hmdb51/hmdb51_val_split_{1,2,3}_videos.txt
# (`path label`, labels 0-50: the classes in alphabetical order, as
# mmaction2's list generator numbers them).
# `class_names_file` (user-supplied): the 51 class names in label order,
# written for prompts ("brush hair" for brush_hair), one per line,
# optionally "name: description".
# Each split is tested with its own videos; tools/test.py prints top-1/top-5
# and mean class accuracy as mean +- std over the splits and writes them to
# <work_dir>/zeroshot_splits.json (MultiSplitTestLoop).
dataset_type = 'ZeroShotVideoDataset'
data_root = 'data/hmdb51/videos'
class_names_file = 'data/hmdb51/hmdb51_classnames.txt'
split_ann_files = [
    'data/hmdb51/hmdb51_val_split_1_videos.txt',
    'data/hmdb51/hmdb51_val_split_2_videos.txt',
    'data/hmdb51/hmdb51_val_split_3_videos.txt',
]
file_client_args = dict(io_backend='disk')
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(
        type='SampleFrames',
        clip_len=32,
        frame_interval=2,
        num_clips=4,
        test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=split_ann_files[0],
        label_names=class_names_file,
        data_prefix=dict(video=data_root),
        pipeline=test_pipeline,
        test_mode=True))
test_evaluator = dict(type='AccMetric')
test_cfg = dict(
    type='MultiSplitTestLoop',
    splits=[
        dict(name='split1', ann_file=split_ann_files[0]),
        dict(name='split2', ann_file=split_ann_files[1]),
        dict(name='split3', ann_file=split_ann_files[2]),
    ],
    result_file='zeroshot_splits.json')

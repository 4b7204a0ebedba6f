# Kinetics-600 novel classes, zero-shot: the 220 classes of Kinetics-600
# that are not in Kinetics-400, tested as three splits of 160 classes each
# (the ER-ZSAR protocol, also used by X-CLIP), on the Kinetics-600
# validation videos of those classes.  Layout of mmaction2's
# tools/data/kinetics (kinetics600): videos in data/kinetics600/videos_val/,
# list data/kinetics600/kinetics600_val_list_videos.txt (`path label`, labels
# 0-599).  User-supplied class lists:
#   class_names_file: the 600 Kinetics-600 names in label order;
#   split_class_files: the 160 names of each split, one per line.
# Videos of other classes are dropped and labels re-indexed per split
# (ZeroShotVideoDataset); the text classifier gets each split's 160 names.
# tools/test.py prints top-1/top-5 and mean class accuracy as mean +- std over
# the splits and writes them to <work_dir>/zeroshot_splits.json.
dataset_type = 'ZeroShotVideoDataset'
data_root = 'data/kinetics600/videos_val'
ann_file = 'data/kinetics600/kinetics600_val_list_videos.txt'
class_names_file = 'data/kinetics600/kinetics600_classnames.txt'
split_class_files = [
    'data/kinetics600/zeroshot/k600_novel_split1.txt',
    'data/kinetics600/zeroshot/k600_novel_split2.txt',
    'data/kinetics600/zeroshot/k600_novel_split3.txt',
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
        ann_file=ann_file,
        label_names=class_names_file,
        classes=split_class_files[0],
        data_prefix=dict(video=data_root),
        pipeline=test_pipeline,
        test_mode=True))
test_evaluator = dict(type='AccMetric')
test_cfg = dict(
    type='MultiSplitTestLoop',
    splits=[
        dict(name='split1', classes=split_class_files[0]),
        dict(name='split2', classes=split_class_files[1]),
        dict(name='split3', classes=split_class_files[2]),
    ],
    result_file='zeroshot_splits.json')

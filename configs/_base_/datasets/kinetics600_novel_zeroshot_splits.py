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
_base_ = ['./video_zeroshot_test.py']
data_root = 'data/kinetics600/videos_val'
ann_file = 'data/kinetics600/kinetics600_val_list_videos.txt'
class_names_file = 'data/kinetics600/kinetics600_classnames.txt'
split_class_files = [
    'data/kinetics600/zeroshot/k600_novel_split1.txt',
    'data/kinetics600/zeroshot/k600_novel_split2.txt',
    'data/kinetics600/zeroshot/k600_novel_split3.txt',
]
test_dataloader = dict(
    dataset=dict(
        ann_file=ann_file,
        label_names=class_names_file,
        classes=split_class_files[0],
        data_prefix=dict(video=data_root)))
test_cfg = dict(splits=[
    dict(name=f'split{i + 1}', classes=file)
    for i, file in enumerate(split_class_files)
])

# UCF101 zero-shot test on the three official splits (testlist01-03), in the
# layout of mmaction2's tools/data/ucf101: videos in data/ucf101/videos/
# <Class>/v_*.avi, lists data/ucf101/ucf101_val_split_{1,2,3}_videos.txt
# (`path label`, labels 0-100 in classInd.txt order).
# `class_names_file` (user-supplied): the 101 class names in label order,
# written for prompts ("apply eye makeup" for ApplyEyeMakeup), one per line,
# optionally "name: description".
# Each split is tested with its own videos; tools/test.py prints top-1/top-5
# and mean class accuracy as mean +- std over the splits and writes them to
# <work_dir>/zeroshot_splits.json (MultiSplitTestLoop).
_base_ = ['./video_zeroshot_test.py']
data_root = 'data/ucf101/videos'
class_names_file = 'data/ucf101/ucf101_classnames.txt'
split_ann_files = [
    'data/ucf101/ucf101_val_split_1_videos.txt',
    'data/ucf101/ucf101_val_split_2_videos.txt',
    'data/ucf101/ucf101_val_split_3_videos.txt',
]
test_dataloader = dict(
    dataset=dict(
        ann_file=split_ann_files[0],
        label_names=class_names_file,
        data_prefix=dict(video=data_root)))
test_cfg = dict(splits=[
    dict(name=f'split{i + 1}', ann_file=file)
    for i, file in enumerate(split_ann_files)
])

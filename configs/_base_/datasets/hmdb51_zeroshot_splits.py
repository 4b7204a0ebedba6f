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
_base_ = ['./video_zeroshot_test.py']
data_root = 'data/hmdb51/videos'
class_names_file = 'data/hmdb51/hmdb51_classnames.txt'
split_ann_files = [
    'data/hmdb51/hmdb51_val_split_1_videos.txt',
    'data/hmdb51/hmdb51_val_split_2_videos.txt',
    'data/hmdb51/hmdb51_val_split_3_videos.txt',
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

# Zero-shot action recognition on your own videos (walk-through:
# docs/new_task.md): no training, the classes are given as text.
# Everything is inherited from the public zero-shot recipe
# icar_swint_k400_zeroshot.py (iCAR Swin-T inflated to Video Swin-T, clips
# of 32 frames every 2, 4 clips x 3 crops, the 28 Kinetics prompt templates
# averaged, frozen text tower, CLIP mean/std); only two things change:
#   1. the dataset: a video list ("relative/path.mp4 label" per line, labels
#      0..N-1) and the folder the paths are relative to;
#   2. the vocabulary file: the N class names in label order, one per line,
#      "name: description" allowed; it names the labels of the list and is
#      the classifier's vocabulary.  num_classes must be N.
# (There is no schedule: this config only tests.)
#   python tools/test.py configs/action/example_custom_zeroshot.py \
#       data/pretrained/icar_swint.pth --show-dir vis
_base_ = ['./icar_swint_k400_zeroshot.py']

# 1. the dataset -----------------------------------------------------------
data_root = 'data/my_videos/'
ann_file = data_root + 'test_list.txt'
# 2. the vocabulary --------------------------------------------------------
vocabulary = data_root + 'vocabulary.txt'
num_classes = 5

test_dataloader = dict(
    dataset=dict(
        type='ZeroShotVideoDataset',
        ann_file=ann_file,
        label_names=vocabulary,
        data_prefix=dict(video=data_root + 'videos')))
model = dict(
    cls_head=dict(
        num_classes=num_classes,
        text_classifier=dict(vocabulary=vocabulary)))

# Open-vocabulary detection on your own COCO-format dataset (walk-through:
# docs/new_task.md).  Everything is inherited from the public iCAR Swin-T
# COCO open-vocabulary recipe (icar_swint_coco_ov.py: Mask R-CNN FPN, text
# classifier with learned background, frozen RoBERTa, class-agnostic boxes
# and masks); only three things change:
#   1. the dataset: a COCO-format annotation file per split under data_root
#      and which of its categories are trained on (base) and which are only
#      tested (novel: never annotated in training, recognised from text);
#   2. the vocabulary file: the class names in label order (= category-id
#      order of the annotation file), one per line, "name: description"
#      allowed -- the text encoder turns them into the classifier.  `classes`
#      below is the one source of the label order: the file is checked
#      against it by name when the model is built, and a file in another
#      order (or with other names) is an error naming both and the first
#      label where they differ;
#   3. the schedule: 24 epochs (a small dataset needs more passes).
# Layout expected under data_root:
#   annotations/instances_train.json  annotations/instances_val.json
#   train/*.jpg  val/*.jpg  vocabulary.txt
#   python tools/train.py configs/det/example_custom_ov.py
#   python tools/test.py configs/det/example_custom_ov.py \
#       work_dirs/example_custom_ov/epoch_24.pth --show-dir vis
_base_ = ['./icar_swint_coco_ov.py']

# 1. the dataset -----------------------------------------------------------
data_root = 'data/kitchen/'
# every class of the split, in the category-id order of the annotation file
classes = ('cup', 'bowl', 'teapot', 'knife', 'spoon', 'kettle', 'bottle')
base_classes = ('cup', 'bowl', 'knife', 'spoon', 'bottle')  # trained on
novel_classes = ('teapot', 'kettle')  # tested only (zero-shot)
ov_split = dict(
    metainfo=dict(classes=classes),
    base_classes=base_classes,
    novel_classes=novel_classes)
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        **ov_split))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        **ov_split))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# 2. the vocabulary --------------------------------------------------------
vocabulary = data_root + 'vocabulary.txt'
num_classes = len(classes)
model = dict(
    roi_head=dict(
        bbox_head=dict(
            num_classes=num_classes,
            train_classes=base_classes,
            text_classifier=dict(
                vocabulary=dict(
                    _delete_=True,  # replaces the base config's class list
                    source=vocabulary,
                    classes=classes,
                    classes_from='{{ fileBasename }}: classes'),
                descriptions=True)),
        mask_head=dict(num_classes=num_classes)))

# 3. the schedule: 24 epochs, lr steps at 16 and 22, validation every 2 ----
max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
default_hooks = dict(
    checkpoint=dict(
        interval=2,
        max_keep_ckpts=2,
        save_best='coco/bbox_AP50_novel',
        rule='greater'))

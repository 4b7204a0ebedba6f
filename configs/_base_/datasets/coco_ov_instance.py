# COCO 2017 open-vocabulary detection (OVR-CNN split): 48 base and 17 novel
# categories, chosen by name (icar_dense.datasets.det_ov).  Training keeps
# the base annotations only (images without any are skipped); the test set
# has all 65 classes, and the metric reports novel / base / all AP50
# (coco/bbox_AP50_novel is the headline) next to the usual COCO numbers.
# The images, pipelines and loaders are those of coco_instance.py.
_base_ = ['./coco_instance.py']
dataset_type = 'OVCocoDataset'

base_classes = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat',
    'bench', 'bird', 'horse', 'sheep', 'bear', 'zebra', 'giraffe', 'backpack',
    'handbag', 'suitcase', 'frisbee', 'skis', 'kite', 'surfboard', 'bottle',
    'fork', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed', 'toilet', 'tv',
    'laptop', 'mouse', 'remote', 'microwave', 'oven', 'toaster',
    'refrigerator', 'book', 'clock', 'vase', 'toothbrush')
novel_classes = ('airplane', 'bus', 'cat', 'dog', 'cow', 'elephant',
                 'umbrella', 'tie', 'snowboard', 'skateboard', 'cup', 'knife',
                 'cake', 'couch', 'keyboard', 'sink', 'scissors')
# all 65, in COCO category-id order (= label order)
classes = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'kite', 'skateboard',
    'surfboard', 'bottle', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana',
    'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut',
    'cake', 'chair', 'couch', 'bed', 'toilet', 'tv', 'laptop', 'mouse',
    'remote', 'keyboard', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'toothbrush')

ov_split = dict(
    metainfo=dict(classes=classes),
    base_classes=base_classes,
    novel_classes=novel_classes)
train_dataloader = dict(dataset=dict(type=dataset_type, **ov_split))
val_dataloader = dict(dataset=dict(type=dataset_type, **ov_split))
test_dataloader = val_dataloader

val_evaluator = dict(type='OVCocoAP50Metric')
test_evaluator = val_evaluator

# Open-vocabulary COCO (OVR-CNN split: 48 base / 17 novel) with iCAR Swin-B:
# Mask R-CNN FPN whose box classifier is the iCAR text classifier (RoBERTa,
# 80 templates, tau 0.05, learned background), trained on the base classes
# only and tested on all 65; reports coco/bbox_AP50_novel (headline),
# coco/bbox_AP50_base and coco/bbox_AP50_all.  AdamW 1x, 8 GPUs x 2 images.
_base_ = [
    '../_base_/models/mask_rcnn_icar_swin_fpn_ov.py',
    '../_base_/datasets/coco_ov_instance.py',
    '../_base_/schedules/det_schedule_adamw_1x.py',
    '../_base_/default_runtime_det.py'
]
num_classes = 65

model = dict(
    roi_head=dict(
        bbox_head=dict(
            num_classes=num_classes,
            train_classes={{_base_.base_classes}},
            text_classifier=dict(
                vocabulary={{_base_.classes}}, descriptions=False)),
        mask_head=dict(num_classes=num_classes)))

# COCO fine-tuning of iCAR Swin-B: Mask R-CNN FPN, 1x AdamW, 1333x800, with
# the text classifier as box classifier (the 80 COCO names, 80 templates,
# tau 0.05, learned background) -- box AP and mask AP on val2017.
_base_ = [
    '../_base_/models/mask_rcnn_icar_swin_fpn_ov.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_schedule_adamw_1x.py',
    '../_base_/default_runtime_det.py'
]
num_classes = 80

model = dict(
    roi_head=dict(
        bbox_head=dict(
            num_classes=num_classes,
            text_classifier=dict(vocabulary='coco', descriptions=False)),
        mask_head=dict(num_classes=num_classes)))

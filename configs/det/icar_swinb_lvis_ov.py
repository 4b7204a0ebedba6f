# Open-vocabulary LVIS v1 (ViLD protocol) with iCAR Swin-B:
# Mask R-CNN FPN, box classifier = iCAR text classifier (RoBERTa-base text
# encoder, class name + LVIS definition prompts, 80 templates, tau 0.03 as in
# iCAR's LVIS run; 0.05 elsewhere), learned background embedding, softmax CE.
# Trained on the 866 base classes (frequent + common; rare annotations
# removed, RFS 0.001), tested on all 1203: LVIS box/mask AP, AP_r = novel.
# 1024x1024 large-scale jitter, AdamW 2x, 8 GPUs x 2 images:
#   tools/dist_train.sh configs/det/icar_swinb_lvis_ov.py 8
# Weights: data/pretrained/icar_swinb.pth (official iCAR or converted) and a
# RoBERTa-base folder (config + tokenizer) at data/pretrained/roberta-base.
_base_ = [
    '../_base_/models/mask_rcnn_icar_swin_fpn_ov.py',
    '../_base_/datasets/lvis_v1_ov_instance.py',
    '../_base_/schedules/det_schedule_adamw_2x.py',
    '../_base_/default_runtime_det.py'
]
lvis_val = 'data/lvis_v1/annotations/lvis_v1_val.json'
image_size = (1024, 1024)
num_classes = 1203

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
    ]),
    roi_head=dict(
        bbox_head=dict(
            num_classes=num_classes,
            # the base classes, read from the categories' LVIS frequency
            train_classes=dict(ann_file=lvis_val, frequencies=('f', 'c')),
            text_classifier=dict(
                vocabulary=lvis_val,  # names + 'def' of the LVIS categories
                descriptions=True,
                tau=0.03)),
        mask_head=dict(num_classes=num_classes)),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.0001,
            # LVIS allows up to 300 detections per image
            max_per_img=300)))

# LVIS box / mask AP with lvis-api's numbers (mmdet's LVISMetric keys) in
# bounded time and memory: icar_dense/evaluation/lvis_metric.py
val_evaluator = dict(type='FastLVISMetric')
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))

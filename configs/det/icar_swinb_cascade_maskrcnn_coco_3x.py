# COCO fine-tuning of iCAR Swin-B: Cascade Mask R-CNN FPN with three
# open-vocabulary box heads (text classifier, 80 COCO names), 3x AdamW with
# the multi-scale + crop augmentation of the Swin Transformer recipe.
_base_ = [
    '../_base_/models/cascade_mask_rcnn_icar_swin_fpn_ov.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_schedule_adamw_3x.py',
    '../_base_/default_runtime_det.py'
]
# The three stage heads of the base model are set up for COCO already:
# num_classes=80 and text_classifier.vocabulary='coco' (mmdet's 80 names).

# augmentation of DETR / Sparse R-CNN, as in mmdet's Swin 3x configs
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[[
            dict(
                type='RandomChoiceResize',
                scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333),
                        (608, 1333), (640, 1333), (672, 1333), (704, 1333),
                        (736, 1333), (768, 1333), (800, 1333)],
                keep_ratio=True)
        ],
                    [
                        dict(
                            type='RandomChoiceResize',
                            scales=[(400, 1333), (500, 1333), (600, 1333)],
                            keep_ratio=True),
                        dict(
                            type='RandomCrop',
                            crop_type='absolute_range',
                            crop_size=(384, 600),
                            allow_negative_crop=True),
                        dict(
                            type='RandomChoiceResize',
                            scales=[(480, 1333), (512, 1333), (544, 1333),
                                    (576, 1333), (608, 1333), (640, 1333),
                                    (672, 1333), (704, 1333), (736, 1333),
                                    (768, 1333), (800, 1333)],
                            keep_ratio=True)
                    ]]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

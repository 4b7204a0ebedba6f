# icar_swinb_maskrcnn_coco_1x.py with the iCAR Swin-T image encoder (quick
# experiments).
_base_ = ['./icar_swinb_maskrcnn_coco_1x.py']
icar_checkpoint = 'data/pretrained/icar_swint.pth'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=icar_checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(
        bbox_head=dict(
            text_classifier=dict(
                init_cfg=dict(
                    type='Pretrained',
                    checkpoint=icar_checkpoint,
                    prefix='text_classifier.')))))

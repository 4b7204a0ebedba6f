# Zero-shot Kinetics-400 with the iCAR Swin-T image-text model (see
# icar_swinb_k400_zeroshot.py).
_base_ = ['./icar_swinb_k400_zeroshot.py']
icar_checkpoint = 'data/pretrained/icar_swint.pth'
model = dict(
    backbone=dict(arch='tiny', pretrained=icar_checkpoint),
    cls_head=dict(
        in_channels=768,
        text_classifier=dict(
            in_channels=768,
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))))

# Zero-shot ADE20K-150 with iCAR Swin-T (see the Swin-B config).
_base_ = ['./icar_swinb_upernet_ade20k_zeroshot.py']
icar_checkpoint = 'data/pretrained/icar_swint.pth'
model = dict(
    backbone=dict(
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint=icar_checkpoint)),
    decode_head=dict(
        in_channels=768,
        channels=768,
        text_classifier=dict(
            in_channels=768,
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))))

# Open-vocabulary ADE20K split with iCAR Swin-T + UperNet (see the Swin-B
# config for the protocol); text tower frozen, as there.
_base_ = ['./icar_swinb_upernet_ade20k_ov_split.py']
icar_checkpoint = 'data/pretrained/icar_swint.pth'
model = dict(
    backbone=dict(
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint=icar_checkpoint)),
    decode_head=dict(
        in_channels=[96, 192, 384, 768],
        text_classifier=dict(
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))),
    auxiliary_head=dict(in_channels=384))

# iCAR Swin-T + UperNet, ADE20K-150, 512x512, 160k iterations, batch 16;
# the recipe of icar_swinb_upernet_ade20k_160k.py: text tower trained at the
# base lr (as the iCAR authors do; +1491 MB of AdamW state per GPU for
# RoBERTa-base, see there).
_base_ = ['./icar_swinb_upernet_ade20k_160k.py']
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

_base_ = ['./icar_swinb_zeroshot_cls.py']
checkpoint = 'data/pretrained/icar_swint.pth'
model = dict(
    backbone=dict(arch='tiny',
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    text_classifier=dict(
        in_channels=768,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                      prefix='text_classifier.')))

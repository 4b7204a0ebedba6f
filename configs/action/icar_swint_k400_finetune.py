# iCAR Swin-T inflated to Video Swin-T, fine-tuned on Kinetics-400 (same
# recipe as icar_swinb_k400_finetune.py, text tower trained at the backbone's
# 0.1 x lr: the same +1491 MB of AdamW state per GPU for RoBERTa-base;
# stochastic depth 0.1 as mmaction2's Swin-T).
_base_ = ['./icar_swinb_k400_finetune.py']
icar_checkpoint = 'data/pretrained/icar_swint.pth'
model = dict(
    backbone=dict(
        arch='tiny', drop_path_rate=0.1, pretrained=icar_checkpoint),
    cls_head=dict(
        in_channels=768,
        text_classifier=dict(
            in_channels=768,
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))))

# iCAR Swin-B + UperNet, ADE20K-150, 512x512 crops, 160k iterations,
# batch 16 (8 GPUs x 2 images); mmseg's Swin ADE20K recipe with the pixel
# classifier replaced by iCAR's text classifier (frozen RoBERTa text tower;
# set model.decode_head.text_classifier.freeze_text_encoder=False to
# fine-tune it).
#   train: bash tools/dist_train.sh configs/seg/icar_swinb_upernet_ade20k_160k.py 8
#   test (single scale, slide 512/341):   tools/test.py CONFIG CKPT
#   test (multi-scale 0.5-1.75 + flip):   tools/test.py CONFIG CKPT --tta
_base_ = [
    '../_base_/models/upernet_icar_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/seg_schedule_160k_adamw.py'
]
icar_checkpoint = 'data/pretrained/icar_swinb.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='base',
        init_cfg=dict(type='Pretrained', checkpoint=icar_checkpoint)),
    decode_head=dict(
        in_channels=[128, 256, 512, 1024],
        num_classes=150,
        # RoBERTa + text projector from the iCAR file; its visual projection
        # (1024 -> 256) does not fit UperNet's 512 channels: re-initialised
        text_classifier=dict(
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))),
    auxiliary_head=dict(in_channels=512, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

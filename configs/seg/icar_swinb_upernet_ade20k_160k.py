# iCAR Swin-B + UperNet, ADE20K-150, 512x512 crops, 160k iterations,
# batch 16 (8 GPUs x 2 images); mmseg's Swin ADE20K recipe with the pixel
# classifier replaced by iCAR's text classifier.
#
# Text tower: TRAINED, as the iCAR authors fine-tune segmentation (their
# language decode heads, weiyx16/mmsegmentation branch lanhead, keep RoBERTa
# trainable: fix_lanhead=False; no learning-rate multiplier in their configs
# nor in mmseg's Swin schedule, so it learns at the base lr 6e-5, weight decay
# 0.01).  Each step encodes one random prompt per class (150, of the 80
# templates) with gradients, for the decode head and again for the auxiliary
# head, which shares the tower; the prompts are split over the GPUs as the
# authors do (shard_min_prompts=128: 19 per GPU out of 8, gathered with
# gradients).  Memory cost per GPU: RoBERTa-base + the projector are 124.25M
# parameters; with AdamW in fp32, weights + gradients + 2 moments =
# 16 B/parameter = 1988 MB, against 497 MB of weights when frozen: +1491 MB.
# Plus the activations kept for the backward pass (measured, 16 tokens,
# dropout on, fp32): 1675 MB for 150 prompts on one GPU, ~210 MB for the 19 of
# a GPU out of 8, twice per step (two heads).
# The class embeddings then drift from iCAR's: for open-vocabulary use keep
# the tower frozen (the _ov_split and _zeroshot configs do):
#   --cfg-options model.decode_head.text_classifier.freeze_text_encoder=True
# The visual projection is re-initialised (UperNet's 512 channels), as in the
# authors' heads.
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
            freeze_text_encoder=False,
            shard_min_prompts=128,
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

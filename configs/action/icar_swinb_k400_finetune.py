# iCAR Swin-B inflated to Video Swin-B and fine-tuned on Kinetics-400 with
# the language head (class embeddings from RoBERTa; the authors' 28 Kinetics
# templates, one drawn per class per step, all 28 averaged at test).
# 32 frames x interval 2, 224 crops; AdamW lr 3e-4 (every `backbone`
# parameter x0.1, see the schedule), 30 epochs with 2.5 warmup epochs and
# cosine decay, batch 64 (8 GPUs x 8 clips); test 4 clips x 3 crops: top-1 /
# top-5 and mean class accuracy.
#   tools/dist_train.sh configs/action/icar_swinb_k400_finetune.py 8 --amp
#   tools/test.py configs/action/icar_swinb_k400_finetune.py CKPT
# The backbone is inflated from the official iCAR checkpoint (2D -> 3D, as
# mmaction2 inflates Swin); the text tower and the visual projection come
# from the same file.
#
# Text tower: TRAINED, as the iCAR authors fine-tune Kinetics-400 (their
# language-head config puts lr_mult=0.1 on every parameter named `backbone`,
# which covers RoBERTa's `language_model.backbone`): here
# cls_head.text_classifier.text_encoder.backbone.* trains at the Swin's
# 0.1 x lr, the text projector at the full lr.  Each step encodes one prompt
# per class (400) with gradients, split over the GPUs as the authors do
# (shard_min_prompts=128: with 8 GPUs each encodes 50, gathered with
# gradients).  Memory cost per GPU: RoBERTa-base + the projector are 124.25M
# parameters; trained with AdamW in fp32 they hold weights + gradients + 2
# moments = 16 B/parameter = 1988 MB, against 497 MB of weights when frozen:
# +1491 MB.  Plus the activations kept for the backward pass (measured, 16
# tokens, dropout on, fp32): 4466 MB for 400 prompts on one GPU, ~560 MB for
# the 50 of a GPU out of 8 (autocast: about 3/4 of that).
# To freeze it (less memory, the pre-trained class embeddings kept):
#   --cfg-options model.cls_head.text_classifier.freeze_text_encoder=True
_base_ = [
    '../_base_/models/recognizer_icar_swin3d.py',
    '../_base_/datasets/kinetics400_video_32x2.py',
    '../_base_/schedules/action_adamw_cosine_30e.py',
    '../_base_/default_runtime_action.py'
]
icar_checkpoint = 'data/pretrained/icar_swinb.pth'
model = dict(
    backbone=dict(pretrained=icar_checkpoint),
    cls_head=dict(
        text_classifier=dict(
            freeze_text_encoder=False,
            shard_min_prompts=128,
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))))
default_hooks = dict(
    checkpoint=dict(interval=3, max_keep_ckpts=5),
    logger=dict(interval=100),
    visualization=dict(type='VisualizationHook', enable=False))

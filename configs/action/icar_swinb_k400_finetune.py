# iCAR Swin-B inflated to Video Swin-B and fine-tuned on Kinetics-400 with
# the language head (class embeddings from RoBERTa, "a photo of {}.").
# 32 frames x interval 2, 224 crops; AdamW lr 3e-4 (backbone x0.1), 30 epochs
# with 2.5 warmup epochs and cosine decay, batch 64 (8 GPUs x 8 clips); test
# 4 clips x 3 crops: top-1 / top-5 and mean class accuracy.
#   tools/dist_train.sh configs/action/icar_swinb_k400_finetune.py 8 --amp
#   tools/test.py configs/action/icar_swinb_k400_finetune.py CKPT
# The backbone is inflated from the official iCAR checkpoint (2D -> 3D, as
# mmaction2 inflates Swin); the text tower and the visual projection come
# from the same file.
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
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))))
default_hooks = dict(
    checkpoint=dict(interval=3, max_keep_ckpts=5),
    logger=dict(interval=100),
    visualization=dict(type='VisualizationHook', enable=False))

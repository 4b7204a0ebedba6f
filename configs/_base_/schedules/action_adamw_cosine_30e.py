# The iCAR authors' Kinetics-400 language-head schedule (weiyx16/Video-Swin-
# Transformer, configs/recognition/swin/
# swin_base_patch244_window877_kinetics400_22k_lanhead.py), itself Video
# Swin's: AdamW lr 3e-4, wd 0.05, linear warmup for 2.5 epochs, cosine to 0 at
# 30 epochs; validation every 3 epochs.  Batch 64 (8 GPUs x 8 clips); mixed
# precision with tools/train.py --amp.
#
# Parameter-wise settings: the authors' custom_keys, with mmengine's default
# constructor, whose rule is the authors' (mmcv's): a parameter takes the
# setting of the LONGEST key contained in its name, and only that one.  So:
#   * every name containing `backbone` trains at lr x0.1: the video Swin
#     (backbone.*) and the RoBERTa text tower
#     (cls_head.text_classifier.text_encoder.backbone.*, when it trains);
#     with weight decay, including the Swin's norms (`backbone` is longer
#     than `norm`);
#   * Swin relative_position_bias_table: no decay, full lr (the longer key);
#   * RoBERTa's LayerNorms ("LayerNorm", capital N) match `backbone` only;
#   * the text projector (text_encoder.projector, 768 -> 256) and the visual
#     projection (visual_proj, 1024 -> 256): full lr, with decay.
# (mmaction2's own Video Swin configs use SwinOptimWrapperConstructor, which
# multiplies every matching key instead: bias tables at x0.1 without decay,
# Swin norms without decay.)
optim_wrapper = dict(
    type='OptimWrapper',
    # mmengine's default constructor, one log line for the frozen tensors
    constructor='SummarizedOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'backbone': dict(lr_mult=0.1)
        }))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=2.5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=30,
        eta_min=0,
        by_epoch=True,
        begin=0,
        end=30)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=30, val_begin=1, val_interval=3)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# tools/train.py --auto-scale-lr rescales lr from this total batch size
auto_scale_lr = dict(enable=False, base_batch_size=64)

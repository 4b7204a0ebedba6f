# Video Swin's Kinetics schedule (mmaction2 zoo) with iCAR's learning rate:
# AdamW lr 3e-4 (backbone x0.1), wd 0.05 without decay on norms and position
# tables, linear warmup for 2.5 epochs, cosine to 0 at 30 epochs; validation
# every 3 epochs.  Batch 64 (8 GPUs x 8 clips); mixed precision with
# tools/train.py --amp (mmaction's zoo config uses AmpOptimWrapper).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='SwinOptimWrapperConstructor',
    paramwise_cfg=dict(
        absolute_pos_embed=dict(decay_mult=0.),
        relative_position_bias_table=dict(decay_mult=0.),
        norm=dict(decay_mult=0.),
        backbone=dict(lr_mult=0.1)))
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

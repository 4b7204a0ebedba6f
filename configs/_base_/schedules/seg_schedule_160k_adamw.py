# mmseg's Swin UperNet ADE20K schedule: AdamW (lr 6e-5, wd 0.01, no decay on
# norms and position tables), linear warmup over 1500 iterations, then poly
# decay to 0 at 160k iterations; batch 16 (8 GPUs x 2 images).
optim_wrapper = dict(
    type='OptimWrapper',
    # mmengine's default constructor, one log line for the frozen tensors
    constructor='SummarizedOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False,
    )
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# tools/train.py --auto-scale-lr rescales lr from this total batch size
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Runtime shared by the action recognition configs (mmaction2 conventions).
default_scope = 'mmaction'
# icar_dense.action (this task's modules) is imported the first time an
# mmaction registry is searched (icar_dense/registry.py)
custom_imports = dict(imports=['icar_dense'], allow_failed_imports=False)
# mmengine's Runner with icar_dense's checks (empty datasets, resume from a
# bad last_checkpoint, safe checkpoint loading, atomic checkpoint writes)
runner_type = 'ICARRunner'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', interval=1, save_best='auto'),
    # SIGTERM / SIGINT: checkpoint at the end of the iteration, then exit
    signal_checkpoint=dict(type='SignalCheckpointHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    sync_buffers=dict(type='SyncBuffersHook'),
    visualization=dict(type='VideoVisualizationHook', enable=False))
custom_hooks = [dict(type='SaveMetricsHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ActionVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False

# Runtime shared by the segmentation configs (mmseg conventions).
default_scope = 'mmseg'
# icar_dense.seg (this task's modules) is imported the first time an
# mmseg registry is searched (icar_dense/registry.py)
custom_imports = dict(imports=['icar_dense'], allow_failed_imports=False)
# mmengine's Runner with icar_dense's checks (empty datasets, resume from a
# bad last_checkpoint, safe checkpoint loading, atomic checkpoint writes)
runner_type = 'ICARRunner'

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='SafeCheckpointHook', by_epoch=False, interval=16000),
    # SIGTERM / SIGINT: checkpoint at the end of the iteration, then exit
    signal_checkpoint=dict(type='SignalCheckpointHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
custom_hooks = [dict(type='SaveMetricsHook')]

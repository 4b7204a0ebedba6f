# Runtime shared by the detection configs (mmdet conventions).
default_scope = 'mmdet'
# icar_dense.det (this task's modules) is imported the first time an
# mmdet registry is searched (icar_dense/registry.py)
custom_imports = dict(imports=['icar_dense'], allow_failed_imports=False)
# mmengine's Runner with icar_dense's checks (empty datasets, resume from a
# bad last_checkpoint, safe checkpoint loading, atomic checkpoint writes)
runner_type = 'ICARRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3),
    # SIGTERM / SIGINT: checkpoint at the end of the iteration, then exit
    signal_checkpoint=dict(type='SignalCheckpointHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
custom_hooks = [dict(type='SaveMetricsHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='OVDetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
# tools/test.py --tta: the views of the dataset config's tta_pipeline merged
# by NMS (boxes; masks follow their boxes); max_per_img=None: as many as the
# model keeps per image (test_cfg.rcnn.max_per_img)
tta_model = dict(
    type='OVDetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=None))

log_level = 'INFO'
load_from = None
resume = False

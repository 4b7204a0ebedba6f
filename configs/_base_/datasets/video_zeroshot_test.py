# Zero-shot video test shared by the UCF101, HMDB51 and Kinetics-600-novel
# split configs: Video Swin's test view (4 clips of 32 frames, stride 2, three
# 224 crops), one video per batch, top-1/top-5 and mean class accuracy.  The
# dataset configs inheriting it set the videos, the class names and the
# splits (test_dataloader.dataset and test_cfg.splits).
dataset_type = 'ZeroShotVideoDataset'
file_client_args = dict(io_backend='disk')
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(
        type='SampleFrames',
        clip_len=32,
        frame_interval=2,
        num_clips=4,
        test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        pipeline=test_pipeline,
        test_mode=True))
test_evaluator = dict(type='AccMetric')
test_cfg = dict(type='MultiSplitTestLoop', result_file='zeroshot_splits.json')

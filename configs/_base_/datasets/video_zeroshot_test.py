# Zero-shot video test shared by the UCF101, HMDB51 and Kinetics-600-novel
# split configs: Video Swin's test view (4 clips of 32 frames, stride 2, three
# 224 crops), one video per batch, top-1/top-5 and mean class accuracy.  The
# dataset configs inheriting it set the videos, the class names and the
# splits (test_dataloader.dataset and test_cfg.splits).
_base_ = ['./video_swin_test_view.py']
dataset_type = 'ZeroShotVideoDataset'
test_pipeline = {{_base_.test_pipeline}}
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

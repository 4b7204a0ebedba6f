# Video Swin's test view, shared by Kinetics-400 and the zero-shot video
# tests: 4 clips of 32 frames sampled every 2 frames, short side 224, three
# 224x224 crops (12 views, scores averaged by the head).
# SafeLoad: a corrupt, empty or missing video fails naming the file (decord
# alone says only "Error reading N bytes"); test sets cannot skip samples.
file_client_args = dict(io_backend='disk')
test_pipeline = [
    dict(
        type='SafeLoad',
        transforms=[
            dict(type='DecordInit', **file_client_args),
            dict(
                type='SampleFrames',
                clip_len=32,
                frame_interval=2,
                num_clips=4,
                test_mode=True),
            dict(type='DecordDecode'),
        ]),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

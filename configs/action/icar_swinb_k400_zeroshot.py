# Zero-shot Kinetics-400 with the iCAR Swin-B image-text model: no video
# training.  The image encoder is inflated to Video Swin-B (2x4x4 patches,
# window 8x7x7; a clip whose frames were all equal would give exactly the
# image features), clip features are averaged over time and space, projected
# by iCAR's visual projection and compared with the RoBERTa embeddings of
# the 400 class names, averaged over the authors' 28 Kinetics templates
# (templates='kinetics28'; `single` for "a photo of {}." alone).  Frames are
# normalised with CLIP's mean/std x 256, as iCAR's zero-shot evaluation does.
# Text tower: frozen (nothing is trained; the class embeddings are iCAR's).
# Test only:
#   tools/test.py configs/action/icar_swinb_k400_zeroshot.py \
#       data/pretrained/icar_swinb.pth [--vocabulary my_classes.txt]
# (ICARRecognizer3D reads the official iCAR file directly).
_base_ = [
    '../_base_/models/recognizer_icar_swin3d.py',
    '../_base_/datasets/kinetics400_video_32x2.py',
    '../_base_/default_runtime_action.py'
]
icar_checkpoint = 'data/pretrained/icar_swinb.pth'
model = dict(
    data_preprocessor=dict(
        mean=[123.2524, 117.2038, 104.5019],
        std=[68.7692, 66.8935, 70.5989]),
    backbone=dict(pretrained=icar_checkpoint, drop_path_rate=0.),
    cls_head=dict(
        dropout_ratio=0.,
        text_classifier=dict(
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.'))))
default_hooks = dict(
    visualization=dict(type='VisualizationHook', enable=False))
# test only
train_dataloader = None
train_cfg = None
optim_wrapper = None
param_scheduler = None
val_dataloader = None
val_cfg = None
val_evaluator = None
test_cfg = dict(type='TestLoop')

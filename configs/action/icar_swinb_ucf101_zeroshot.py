# Zero-shot action recognition on UCF101 (three official splits)
# with the Video Swin-B iCAR model fine-tuned on Kinetics-400
# (icar_swinb_k400_finetune.py), without training on its videos; the text
# classifier gets each split's class names.  Reported: top-1 (and top-5, mean
# class accuracy) as mean +- std over the splits, also written to
# <work_dir>/zeroshot_splits.json.
#   tools/test.py configs/action/icar_swinb_ucf101_zeroshot.py K400_CKPT
# This is the X-CLIP / ViFi-CLIP protocol (mean +- std over three splits);
# the iCAR authors' own protocol is icar_swinb_ucf101_zeroshot_split1.py
# (see docs/ov_protocols.md).  Prompts: the 28 Kinetics templates, averaged.
# Text tower: frozen (zero-shot: the fine-tuned tower of the checkpoint, used
# as it is).  Frames are normalised as in fine-tuning (ImageNet mean/std).
# Test only.
_base_ = [
    '../_base_/models/recognizer_icar_swin3d.py',
    '../_base_/datasets/ucf101_zeroshot_splits.py',
    '../_base_/default_runtime_action.py'
]
model = dict(backbone=dict(drop_path_rate=0.))
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

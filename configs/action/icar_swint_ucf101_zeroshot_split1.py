# Zero-shot UCF101 on split 1 only (the iCAR authors' protocol) with the Video
# Swin-T iCAR model fine-tuned on Kinetics-400 (icar_swint_k400_finetune.py);
# see icar_swinb_ucf101_zeroshot_split1.py.
_base_ = ['./icar_swinb_ucf101_zeroshot_split1.py']
model = dict(
    backbone=dict(arch='tiny'),
    cls_head=dict(in_channels=768, text_classifier=dict(in_channels=768)))

# Zero-shot action recognition on the Kinetics-600 classes not in
# Kinetics-400 (three splits of 160 classes)
# with the Video Swin-T iCAR model fine-tuned on Kinetics-400
# (icar_swint_k400_finetune.py); see icar_swinb_k600novel_zeroshot.py.
_base_ = ['./icar_swinb_k600novel_zeroshot.py']
model = dict(
    backbone=dict(arch='tiny'),
    cls_head=dict(in_channels=768, text_classifier=dict(in_channels=768)))

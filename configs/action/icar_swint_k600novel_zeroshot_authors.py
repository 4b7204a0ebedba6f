# Zero-shot Kinetics-600 novel classes, the iCAR authors' protocol (one
# evaluation over all K600 classes not in K400), with the Video Swin-T iCAR
# model fine-tuned on Kinetics-400 (icar_swint_k400_finetune.py); see
# icar_swinb_k600novel_zeroshot_authors.py.
_base_ = ['./icar_swinb_k600novel_zeroshot_authors.py']
model = dict(
    backbone=dict(arch='tiny'),
    cls_head=dict(in_channels=768, text_classifier=dict(in_channels=768)))

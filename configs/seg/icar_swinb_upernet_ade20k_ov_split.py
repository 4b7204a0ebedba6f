# Open-vocabulary ADE20K: iCAR Swin-B + UperNet trained on the 135 seen
# classes only, tested on all 150 (mIoU_seen / mIoU_unseen / hIoU).
# Training is inductive: the pixels of the unseen classes are ignored
# (ADE20KSeenDataset) and the unseen class names take no part in the loss
# softmax (the heads' unseen_classes); at test time every class is scored.
# Text tower: FROZEN (unlike icar_swinb_upernet_ade20k_160k.py, which trains
# it as the iCAR authors' fine-tuning does): training it would move the seen
# names' embeddings and leave the unseen ones behind, so the unseen names keep
# iCAR's embeddings; it also saves the tower's AdamW state (RoBERTa-base:
# 1491 MB per GPU).
_base_ = [
    './icar_swinb_upernet_ade20k_160k.py',
    '../_base_/datasets/ade20k_ov_split.py'
]
unseen_classes = {{_base_.unseen_classes}}
model = dict(
    decode_head=dict(
        unseen_classes=unseen_classes,
        text_classifier=dict(freeze_text_encoder=True)),
    auxiliary_head=dict(unseen_classes=unseen_classes))
train_dataloader = dict(
    dataset=dict(type='ADE20KSeenDataset', unseen_classes=unseen_classes))
val_evaluator = dict(
    type='SeenUnseenIoUMetric',
    iou_metrics=['mIoU'],
    unseen_classes=unseen_classes)
test_evaluator = val_evaluator

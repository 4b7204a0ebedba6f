# ADE20K-150 open-vocabulary split: train on the 135 seen classes (pixels of
# the 15 unseen ones are ignored), test on all 150 and report mIoU_seen,
# mIoU_unseen and their harmonic mean hIoU (configs/seg/*_ov_split.py).
#
# The unseen classes are every 10th class of ADE20K's frequency-ordered list,
# starting at the 6th (indices 5, 15, ..., 145): a fixed split spread over
# frequent and rare classes, stuff and things.  It is this project's split,
# not an official benchmark one; replace `unseen_classes` to use another.
unseen_classes = [
    'ceiling', 'table', 'house', 'wardrobe', 'counter', 'case', 'toilet',
    'swivel chair', 'chandelier', 'bannister', 'conveyer belt', 'bag', 'pot',
    'vase', 'shower'
]

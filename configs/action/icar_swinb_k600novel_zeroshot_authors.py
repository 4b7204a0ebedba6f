# Zero-shot Kinetics-600 novel classes, the iCAR authors' protocol: ONE
# evaluation over every Kinetics-600 class that is not a Kinetics-400 class
# (not the three random 160-class splits of icar_swinb_k600novel_zeroshot.py,
# the X-CLIP protocol), with the Video Swin-B iCAR model fine-tuned on
# Kinetics-400 (icar_swinb_k400_finetune.py).
# The class list is computed when the dataset is built, from the two lists:
# the 600 names of `class_names_file` minus torchvision's Kinetics-400 names
# (ZeroShotVideoDataset exclude_classes='kinetics400'; names compared as
# spelled, as the authors' plain set difference: 232 classes with the official
# names -- "passing american football (not in game)" stays, K400 writes
# "American"; set test_dataloader.dataset.exclude_ignore_case=True for 231).
# The log says how many classes are tested.  Reported: top-1 / top-5 / mean
# class accuracy of that one evaluation (acc/top1, ...), also written to
# <work_dir>/zeroshot_splits.json.
#   tools/test.py configs/action/icar_swinb_k600novel_zeroshot_authors.py \
#       K400_CKPT
# Prompts: the 28 Kinetics templates, averaged.  Text tower: frozen
# (zero-shot: the fine-tuned tower of the checkpoint, used as it is).
# Frames are normalised as in fine-tuning (ImageNet mean/std).  Test only.
_base_ = ['./icar_swinb_k600novel_zeroshot.py']
test_dataloader = dict(
    dataset=dict(
        classes=None,
        exclude_classes='kinetics400',
        exclude_ignore_case=False))
test_cfg = dict(splits=[dict(name='k600_novel')])

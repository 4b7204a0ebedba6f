# Zero-shot HMDB51, the iCAR authors' protocol: split 1 only (the test
# videos of split 1), one evaluation, with the Video Swin-B iCAR model
# fine-tuned on Kinetics-400 (icar_swinb_k400_finetune.py);
# icar_swinb_hmdb51_zeroshot.py is the X-CLIP protocol (mean +- std over the
# three splits).  Reported: top-1 / top-5 / mean class accuracy of split 1
# (acc/top1, ...), also written to <work_dir>/zeroshot_splits.json.
#   tools/test.py configs/action/icar_swinb_hmdb51_zeroshot_split1.py K400_CKPT
# Prompts: the 28 Kinetics templates, averaged.  Text tower: frozen
# (zero-shot: the fine-tuned tower of the checkpoint, used as it is).
# Frames are normalised as in fine-tuning (ImageNet mean/std).  Test only.
_base_ = ['./icar_swinb_hmdb51_zeroshot.py']
test_cfg = dict(
    splits=[
        dict(
            name='split1',
            ann_file='data/hmdb51/hmdb51_val_split_1_videos.txt')
    ])

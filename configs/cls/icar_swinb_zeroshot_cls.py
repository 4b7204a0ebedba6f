# Zero-shot image classification with an iCAR checkpoint: the sanity check to
# run on a (converted) checkpoint before any dense task.
#   python tools/zeroshot_cls.py configs/cls/icar_swinb_zeroshot_cls.py \
#       data/imagenet/val --classes imagenet_classes.txt
# RoBERTa: roberta-base's shape, weights from the checkpoint, tokenizer folder
# `roberta_tokenizer` of roberta_base_arch.py (env ICAR_ROBERTA).
_base_ = ['../_base_/models/roberta_base_arch.py']
checkpoint = 'data/pretrained/icar_swinb.pth'  # official or converted

model = dict(
    backbone=dict(
        type='ICARSwinTransformer',
        arch='base',
        out_indices=(3, ),
        # iCAR's absolute position embedding (pos_embed, trained at 224 px):
        # the authors' Swin adds it; at the 224 px crop below the features
        # are then the pre-trained model's (dense configs drop it)
        use_abs_pos_embed=True,
        pretrain_img_size=224,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    text_classifier=dict(
        type='TextClassifier',
        in_channels=1024,
        embed_dim=256,
        text_encoder={{_base_.icar_text_encoder}},
        vocabulary=None,  # from --classes or the folder names
        templates='imagenet80',
        tau=0.05,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                      prefix='text_classifier.')))

# iCAR's zero-shot normalisation: CLIP's mean/std on the 0-255 scale
data = dict(
    resize=256,
    crop_size=224,
    mean=[123.2524, 117.2038, 104.5019],
    std=[68.7692, 66.8935, 70.5989],
    batch_size=64,
    num_workers=4)

inmap = dict(tau_t=0.01, tau_i=0.04, alpha=0.6, gamma=0.0, iters=2000,
             lr=10.0)

# UperNet with the iCAR Swin-B image encoder and language decode heads.
#
# The pixel classifier of both heads is the iCAR text classifier: per-pixel
# projection of the decode feature to the 256-d joint space, cosine with the
# text embeddings of the class names (80 ImageNet templates averaged at test
# time, one random template per class per step in training), divided by
# tau = 0.05.  The auxiliary head shares the decode head's text tower
# (text_classifier='decode_head') and owns only its projection.
#
# Weights: the backbone, the text encoder (RoBERTa + its 768->256 projector)
# and, where the width fits, the visual projection come from an iCAR
# checkpoint (official file or tools/convert_icar.py output) named by the
# configs in configs/seg/.  The RoBERTa tokenizer folder is
# `roberta_tokenizer` of roberta_base_arch.py (env ICAR_ROBERTA).
_base_ = ['./roberta_base_arch.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
backbone_norm_cfg = dict(type='LN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
text_classifier = dict(
    type='TextClassifier',
    embed_dim=256,
    text_encoder={{_base_.icar_text_encoder}},
    vocabulary='ade20k',
    templates='imagenet80',
    tau=0.05,
    learnable_tau=False,
    background=False,
    freeze_text_encoder=True,
    cache_dir=None)
model = dict(
    type='ICAREncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ICARSwinTransformer',
        arch='base',
        pretrain_img_size=224,
        patch_size=4,
        window_size=7,
        mlp_ratio=4,
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=backbone_norm_cfg),
    decode_head=dict(
        type='ICARUPerHead',
        in_channels=[128, 256, 512, 1024],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        text_classifier=text_classifier,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='ICARFCNHead',
        in_channels=512,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        text_classifier='decode_head',
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

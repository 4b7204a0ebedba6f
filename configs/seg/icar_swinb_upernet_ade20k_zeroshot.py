# Zero-shot ADE20K-150 segmentation with iCAR Swin-B: no fine-tuning, so no
# UperNet decoder (an untrained one would be random) -- the name keeps the
# family of the fine-tuned configs.  Every weight comes from the iCAR
# checkpoint:
#   per-pixel features = the last Swin stage (stride 32, 1024 channels, after
#   the final LayerNorm -- exactly what iCAR average-pools for an image);
#   iCAR's visual projection (1024 -> 256) applied to each pixel (the image
#   embedding is the average of these, the projection being linear);
#   cosine with the RoBERTa embeddings of the class prompts / tau; logits
#   upsampled bilinearly to the image (mmseg's predict_by_feat).
# Images are normalised with CLIP's mean/std x 256, as iCAR's zero-shot
# evaluation does.  Slide inference (512 crops, stride 341).
#   tools/test.py configs/seg/icar_swinb_upernet_ade20k_zeroshot.py \
#       data/pretrained/icar_swinb.pth [--vocabulary my_classes.txt]
# (the segmentor reads official iCAR files and tools/convert_icar.py outputs
# directly).  Test only: there is nothing to train.  Text tower: frozen
# (zero-shot: the class embeddings are iCAR's own).
_base_ = [
    '../_base_/datasets/ade20k.py', '../_base_/default_runtime_seg.py',
    '../_base_/models/roberta_base_arch.py'
]
icar_checkpoint = 'data/pretrained/icar_swinb.pth'
model = dict(
    type='ICAREncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.2524, 117.2038, 104.5019],
        std=[68.7692, 66.8935, 70.5989],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255),
    backbone=dict(
        type='ICARSwinTransformer',
        arch='base',
        pretrain_img_size=224,
        window_size=7,
        out_indices=(3, ),
        drop_path_rate=0.,
        use_abs_pos_embed=False,
        init_cfg=dict(type='Pretrained', checkpoint=icar_checkpoint)),
    decode_head=dict(
        type='ICARFCNHead',
        in_channels=1024,
        in_index=0,
        channels=1024,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.,
        num_classes=150,
        align_corners=False,
        text_classifier=dict(
            type='TextClassifier',
            in_channels=1024,
            embed_dim=256,
            text_encoder={{_base_.icar_text_encoder}},
            vocabulary='ade20k',
            templates='imagenet80',
            tau=0.05,
            freeze_text_encoder=True,
            init_cfg=dict(
                type='Pretrained',
                checkpoint=icar_checkpoint,
                prefix='text_classifier.')),
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
# test only
train_dataloader = None
train_cfg = None
optim_wrapper = None
param_scheduler = None
val_dataloader = None
val_cfg = None
val_evaluator = None
test_cfg = dict(type='TestLoop')

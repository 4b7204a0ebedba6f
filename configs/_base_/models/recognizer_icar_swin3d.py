# Video Swin-B (mmaction2's SwinTransformer3D, 2x4x4 patches, window 8x7x7)
# inflated from the iCAR Swin-B image encoder, with the iCAR language head:
# clip features averaged over time and space, dropout, visual projection
# (1024 -> 256, from the checkpoint's visual_model.projector), cosine with the
# RoBERTa embeddings of the class prompts / tau (0.05).
#
# Prompts: the 28 Kinetics templates of the iCAR authors' video language head
# (templates='kinetics28': "a {photo,video,example,demonstration} of {}.",
# "... of a person {}." and "... of a person using / doing / during /
# performing / practicing {}."): one drawn at random per class per training
# step, all 28 averaged at test (normalise, mean, normalise).  The single
# template "a photo of {}." stays selectable:
#   --cfg-options model.cls_head.text_classifier.templates=single
#
# Text tower: frozen here (test-only and zero-shot configs inherit that);
# the Kinetics-400 fine-tuning configs train it, as the authors did.
#
# Weights: `backbone.pretrained` and the text classifier's init_cfg name an
# official iCAR checkpoint (set by the configs in configs/action/); the
# recognizer also reads that file directly as a test checkpoint.  RoBERTa's
# weights come from it too; its tokenizer folder is `roberta_tokenizer` of
# roberta_base_arch.py (env ICAR_ROBERTA).
_base_ = ['./roberta_base_arch.py']
model = dict(
    type='ICARRecognizer3D',
    backbone=dict(
        type='ICARSwinTransformer3D',
        arch='base',
        pretrained=None,
        pretrained2d=True,
        patch_size=(2, 4, 4),
        window_size=(8, 7, 7),
        mlp_ratio=4.,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        patch_norm=True),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'),
    cls_head=dict(
        type='ICARVideoHead',
        in_channels=1024,
        num_classes=400,
        spatial_type='avg',
        dropout_ratio=0.5,
        average_clips='prob',
        text_classifier=dict(
            type='TextClassifier',
            in_channels=1024,
            embed_dim=256,
            text_encoder={{_base_.icar_text_encoder}},
            vocabulary='kinetics400',
            templates='kinetics28',
            tau=0.05,
            learnable_tau=False,
            background=False,
            freeze_text_encoder=True,
            cache_dir=None)))

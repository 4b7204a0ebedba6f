# Cascade Mask R-CNN FPN with the iCAR Swin-B image encoder: three
# open-vocabulary box heads (4conv1fc + text classifier, class-agnostic GIoU
# box regression on decoded boxes, as in the Swin Transformer detection
# recipe) and a class-agnostic mask head.  Each stage has its own text
# classifier (visual projection and background embedding); they start from
# the same iCAR weights and share one text encoder (ICARCascadeRoIHead builds
# RoBERTa once, not once per stage).  The dataset configs set the vocabulary.
_base_ = ['./mask_rcnn_icar_swin_fpn_ov.py']
num_classes = 80
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
text_classifier = {{_base_.text_classifier}}
# the stages differ in how their box deltas are normalised and in the IoU
# that makes a proposal positive
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067]]
stage_pos_iou_thrs = [0.5, 0.6, 0.7]

# RoI extractors and the mask head are the Mask R-CNN base's
model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        type='ICARCascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_head=[
            dict(
                type='OVShared4Conv1FCBBoxHead',
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=num_classes,
                text_classifier=text_classifier,
                norm_cfg=norm_cfg,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                reg_class_agnostic=True,
                reg_decoded_bbox=True,
                loss_cls=dict(
                    type='CrossEntropyLoss',
                    use_sigmoid=False,
                    loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in stage_target_stds
        ]),
    train_cfg=dict(
        rpn=dict(allowed_border=0),
        rpn_proposal=dict(max_per_img=2000),
        rcnn=[
            dict(
                assigner=dict(
                    type='MaxIoUAssigner',
                    pos_iou_thr=iou,
                    neg_iou_thr=iou,
                    min_pos_iou=iou,
                    match_low_quality=False,
                    ignore_iof_thr=-1),
                sampler=dict(
                    type='RandomSampler',
                    num=512,
                    pos_fraction=0.25,
                    neg_pos_ub=-1,
                    add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in stage_pos_iou_thrs
        ]))

# icar_swinb_lvis_ov.py with Detic's federated sigmoid loss instead of the
# softmax: per batch the classes present plus negatives sampled (50 in all)
# with weight image_count^0.5, restricted to the base classes; no
# background embedding.
_base_ = ['./icar_swinb_lvis_ov.py']
lvis_train = 'data/lvis_v1/annotations/lvis_v1_train.json'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='SigmoidFederatedLoss',
                federated=True,
                num_sample_classes=50,
                class_freq=lvis_train,
                freq_power=0.5,
                loss_weight=1.0),
            text_classifier=dict(background=False))))

"""Detection test-time augmentation (``tools/test.py --tta``)."""
from typing import List

import torch
from mmcv.ops import batched_nms
from mmdet.models.test_time_augs import DetTTAModel
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_flip
from mmengine.structures import InstanceData


def _flip_masks(masks, direction):
    if direction == 'horizontal':
        return masks.flip(-1)
    if direction == 'vertical':
        return masks.flip(-2)
    if direction == 'diagonal':
        return masks.flip(-2, -1)
    raise ValueError(f'unknown flip direction {direction!r}')


@MODELS.register_module()
class OVDetTTAModel(DetTTAModel):
    """mmdet's ``DetTTAModel`` (flip + multi-scale views, boxes merged by
    class-wise NMS) that also keeps the instance masks.

    Each view's boxes and masks (at the original image size, as the model
    returns them with ``rescale=True``) are flipped back, all views are
    concatenated, and class-wise NMS keeps the best boxes; a kept box keeps
    its own view's mask.  mmdet 3.3.0's ``DetTTAModel`` drops the masks
    (so the ``segm`` metric of a Mask R-CNN config cannot run) and returns a
    tuple instead of a data sample for an image without detections.

    Args:
        tta_cfg (dict): ``nms`` (an mmcv NMS config) and ``max_per_img``
            (``None``: the wrapped model's ``test_cfg.rcnn.max_per_img``,
            else 100).
    """

    def _max_per_img(self):
        limit = self.tta_cfg.get('max_per_img')
        if limit is not None:
            return limit
        test_cfg = getattr(self.module, 'test_cfg', None) or {}
        rcnn = test_cfg.get('rcnn') if hasattr(test_cfg, 'get') else None
        if rcnn is not None and rcnn.get('max_per_img') is not None:
            return rcnn['max_per_img']
        return 100

    def _merge_single_sample(
            self, data_samples: List[DetDataSample]) -> DetDataSample:
        with_masks = all('masks' in s.pred_instances for s in data_samples)
        bboxes, scores, labels, masks = [], [], [], []
        for sample in data_samples:
            pred = sample.pred_instances
            meta = sample.metainfo
            boxes, inst_masks = pred.bboxes, pred.get('masks')
            if meta.get('flip', False):
                direction = meta['flip_direction']
                boxes = bbox_flip(
                    bboxes=boxes, img_shape=meta['ori_shape'],
                    direction=direction)
                if with_masks:
                    inst_masks = _flip_masks(inst_masks, direction)
            bboxes.append(boxes)
            scores.append(pred.scores)
            labels.append(pred.labels)
            if with_masks:
                masks.append(inst_masks)
        bboxes = torch.cat(bboxes)
        scores = torch.cat(scores)
        labels = torch.cat(labels)
        if bboxes.numel() == 0:
            keep = torch.zeros(0, dtype=torch.long, device=bboxes.device)
            kept_boxes = bboxes.reshape(0, 4)
            kept_scores = scores.reshape(0)
        else:
            dets, keep = batched_nms(bboxes, scores, labels,
                                     self.tta_cfg['nms'])
            limit = self._max_per_img()
            dets, keep = dets[:limit], keep[:limit]
            kept_boxes, kept_scores = dets[:, :-1], dets[:, -1]
        results = InstanceData()
        results.bboxes = kept_boxes
        results.scores = kept_scores
        results.labels = labels[keep]
        if with_masks:
            results.masks = torch.cat(masks)[keep]
        merged = data_samples[0]
        merged.pred_instances = results
        return merged

"""COCO metric with the open-vocabulary novel / base / all AP50.

The OVR-CNN protocol reports box AP at IoU 0.5 over the 17 novel classes
(the headline), the 48 base classes and all 65.  ``OVCocoAP50Metric`` (not
mmdet's own ``OVCocoMetric``) is mmdet's ``CocoMetric`` (all its usual
numbers) plus, per IoU type,
``{bbox,segm}_AP50_novel``, ``..._AP50_base`` and ``..._AP50_all`` -- each
the mean over the classes of the group of the per-class AP50 (classes without
ground truth in the evaluated images are skipped, as COCOeval does), which is
what COCOeval reports when run on the group's categories alone.

Labels are mapped to category ids by class *name* (``dataset_meta
['classes']``), so a vocabulary in any order is evaluated correctly.

mmdet 3.3 ships an ``OVCocoMetric`` too; this one differs in names
(``bbox_AP50_novel`` instead of ``novel_ap50``, one set per IoU type, so
``segm`` does not overwrite ``bbox``), in counting 100 detections per image
(the COCO standard) and in the name-based label mapping.
"""
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet.datasets.api_wrappers import COCOeval
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger


@METRICS.register_module()
class OVCocoAP50Metric(CocoMetric):
    """``CocoMetric`` + novel / base / all AP50 per IoU type.

    Args:
        novel_classes (Sequence[str], optional): Names of the novel classes.
            None reads ``dataset_meta['novel_classes']`` (set by
            ``OVCocoDataset``).
        base_classes (Sequence[str], optional): Names of the base classes;
            None reads ``dataset_meta['base_classes']``, else all classes that
            are not novel.
        **kwargs: The arguments of mmdet's ``CocoMetric``.
    """

    def __init__(self,
                 *args,
                 novel_classes: Optional[Sequence[str]] = None,
                 base_classes: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.novel_classes = novel_classes
        self.base_classes = base_classes

    def _split(self) -> Dict[str, List[str]]:
        classes = list(self.dataset_meta['classes'])
        novel = self.novel_classes
        if novel is None:
            novel = self.dataset_meta.get('novel_classes')
        if novel is None:
            raise KeyError(
                f'{type(self).__name__}: no novel classes: set novel_classes '
                'or use a dataset that records them in its metainfo '
                '(OVCocoDataset)')
        base = self.base_classes
        if base is None:
            base = self.dataset_meta.get('base_classes')
        if base is None:
            base = [c for c in classes if c not in novel]
        for key, names in (('novel_classes', novel), ('base_classes', base)):
            missing = [n for n in names if n not in classes]
            if missing:
                raise ValueError(
                    f'{type(self).__name__}: {key} {missing} are not among '
                    f'the {len(classes)} evaluated classes')
        return dict(novel=list(novel), base=list(base), all=classes)

    def _label_cat_ids(self) -> List[int]:
        """Category id of each label, matched by class name."""
        cats = self._coco_api.load_cats(self._coco_api.get_cat_ids())
        name2id = {c['name']: c['id'] for c in cats}
        classes = self.dataset_meta['classes']
        missing = [n for n in classes if n not in name2id]
        if missing:
            source = self.ann_file or 'the ground truth of the dataset'
            raise ValueError(
                f'{type(self).__name__}: classes {missing[:10]} are not '
                f'categories of {source}')
        return [name2id[n] for n in classes]

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if self._coco_api is not None and self.cat_ids is None:
            self.cat_ids = self._label_cat_ids()
        eval_results = super().compute_metrics(results)
        if self.format_only:
            return eval_results
        logger = MMLogger.get_current_instance()
        split = self._split()
        _, preds = zip(*results)
        with tempfile.TemporaryDirectory() as tmp:
            result_files = self.results2json(preds, osp.join(tmp, 'ov'))
            for metric in self.metrics:
                if metric not in ('bbox', 'segm'):
                    continue
                per_class = self._per_class_ap50(result_files[metric], metric)
                for group, names in split.items():
                    values = [per_class[n] for n in names
                              if not np.isnan(per_class[n])]
                    value = float(np.mean(values)) if values else -1.0
                    eval_results[f'{metric}_AP50_{group}'] = round(value, 3)
                logger.info(
                    f'{metric} AP50 novel / base / all: '
                    f'{eval_results[f"{metric}_AP50_novel"]:.3f} / '
                    f'{eval_results[f"{metric}_AP50_base"]:.3f} / '
                    f'{eval_results[f"{metric}_AP50_all"]:.3f}')
        return eval_results

    def _per_class_ap50(self, result_file: str,
                        iou_type: str) -> Dict[str, float]:
        """AP at IoU 0.5 (100 detections per image) of every class."""
        classes = list(self.dataset_meta['classes'])
        predictions = load(result_file)
        if iou_type == 'segm':
            for p in predictions:  # mask area, as in CocoMetric
                p.pop('bbox', None)
        if not predictions:
            return {n: (0.0 if self._has_gt(cid) else float('nan'))
                    for n, cid in zip(classes, self.cat_ids)}
        coco_dt = self._coco_api.loadRes(predictions)
        coco_eval = COCOeval(self._coco_api, coco_dt, iou_type)
        coco_eval.params.catIds = list(self.cat_ids)
        coco_eval.params.imgIds = list(self.img_ids)
        coco_eval.params.maxDets = [100]
        coco_eval.params.iouThrs = np.array([0.5])
        coco_eval.evaluate()
        coco_eval.accumulate()
        # precision: (iou, recall, class, area, max dets); COCOeval sorts
        # params.catIds, and the class axis follows that order
        precision = coco_eval.eval['precision']
        id2name = dict(zip(self.cat_ids, classes))
        per_class = {}
        for k, cat_id in enumerate(coco_eval.params.catIds):
            p = precision[0, :, k, 0, 0]
            p = p[p > -1]
            per_class[id2name[cat_id]] = float(
                p.mean()) if p.size else float('nan')
        return per_class

    def _has_gt(self, cat_id: int) -> bool:
        ann_ids = self._coco_api.get_ann_ids(
            img_ids=list(self.img_ids), cat_ids=[cat_id])
        return any(not a.get('iscrowd', 0)
                   for a in self._coco_api.load_anns(ann_ids))

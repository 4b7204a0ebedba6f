# Copyright (c) icar_dense contributors. All rights reserved.
"""LVIS box / mask AP with lvis-api's numbers, in bounded time and memory.

mmdet's ``LVISMetric`` keeps every detection of the test set as a Python dict
(about 3.5 KB per box: ~22 GB for LVIS v1 val's 5.9M detections), writes them
to JSON, reads them back into lvis-api and evaluates one (image, category,
area range) at a time in Python; before that, ``process`` RLE-encodes every
full-image mask (0.36 s per image of 300 masks).  :class:`FastLVISMetric`
computes the same numbers (AP, AP50, AP75, APs/m/l, APr/c/f and lvis-api's
AR@300, box and mask) from arrays:

* ``process`` keeps, per image, the boxes (float32), scores (float32) and
  labels (int32) as numpy arrays and the masks as compressed RLE bytes in one
  blob (plus offsets).  Only the masks LVIS can look at are encoded: those of
  the (at most) 300 best detections whose category is annotated as present in
  the image (a detection of any other category has no ground truth to be
  compared with -- it is a false positive, ignored or dropped whatever its
  mask).  Each mask is cropped to the columns it occupies before its runs are
  found, and the RLE of the full image is assembled from those of the crop
  (the same bytes ``pycocotools.mask.encode`` gives for the full mask).
  With several ranks, each rank matches the images it processed and only
  the match results (no boxes, no masks) are gathered: rank 0 accumulates
  (``lvis_shards``); with ``outfile_prefix`` (result files) the compact
  records are gathered instead (mmengine's ``collect_results``).  Rank 0
  never holds one Python object per detection.
* ``compute_metrics`` evaluates all images and categories at once with numpy:
  IoUs of the (detection, ground truth) pairs of the same image and category
  (boxes: pycocotools' ``bbIou`` arithmetic, vectorised; masks:
  ``pycocotools.mask.iou`` per image), lvis-api's greedy matching run for all
  groups in parallel (one step per detection rank), and its precision /
  recall accumulation per category.

Modules: ``lvis_rle`` (mask encoding), ``lvis_data`` (annotations and
records as arrays), ``lvis_match`` (IoUs, matching), ``lvis_eval``
(accumulation, summary: lvis-api's rules are listed there), ``lvis_shards``
(evaluation split across ranks), this one (the registered metric).  Every
public name is importable from here.

Images without predictions count as images with no detections.  Metric keys
and rounding are those of mmdet's ``LVISMetric`` (``lvis/bbox_AP``, ...,
three decimals); the unrounded numbers are in ``self.last_results``.
"""
import itertools
import json
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dist import get_dist_info
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmdet.registry import METRICS
from .lvis_data import (IOU_THRS, MAX_DETS, REC_THRS, RESULT_KEYS,
                        LVISDetections, LVISGroundTruth, _member, _to_numpy)
from .lvis_eval import evaluate_lvis, match_lvis
from .lvis_rle import compress_rle_counts, encode_mask_rles
from .lvis_shards import accumulate_parts, evaluate_sharded

__all__ = [
    'FastLVISMetric', 'LVISGroundTruth', 'LVISDetections', 'evaluate_lvis',
    'encode_mask_rles', 'compress_rle_counts', 'IOU_THRS', 'REC_THRS'
]


@METRICS.register_module()
class FastLVISMetric(BaseMetric):
    """mmdet's ``LVISMetric`` (bbox / segm) in bounded time and memory.

    Same arguments, metric keys (``lvis/bbox_AP``, ``lvis/segm_APr``, ...)
    and numbers as ``mmdet.evaluation.LVISMetric``; see the module
    docstring for how.  ``proposal`` / ``proposal_fast`` are not provided
    (use mmdet's ``LVISMetric`` for them); ``iou_thrs`` and
    ``proposal_nums`` are accepted and, as in mmdet for bbox / segm, not
    used.

    Args:
        ann_file (str): The LVIS annotation file (required: the LVIS image
            fields ``neg_category_ids`` / ``not_exhaustive_category_ids``
            are not in mmdet's data samples).
        metric (str | list[str]): ``'bbox'`` and / or ``'segm'``.
        classwise (bool): Also report each category's AP (as mmdet).
        metric_items (list[str], optional): Keys of lvis-api's results to
            report; default AP, AP50, AP75, APs, APm, APl, APr, APc, APf.
        format_only (bool): Only write the results (``outfile_prefix``).
        outfile_prefix (str, optional): Write ``<prefix>.bbox.json`` /
            ``<prefix>.segm.json`` in mmdet's format (every mask is then
            encoded).
        max_dets (int): Detections per image (LVIS: 300).
        encode_all_masks (bool): Encode every mask in ``process`` (default:
            only those LVIS evaluates).
    """

    default_prefix: Optional[str] = 'lvis'

    def __init__(self,
                 ann_file: Optional[str] = None,
                 metric: Union[str, List[str]] = 'bbox',
                 classwise: bool = False,
                 proposal_nums: Sequence[int] = (100, 300, 1000),
                 iou_thrs: Optional[Union[float, Sequence[float]]] = None,
                 metric_items: Optional[Sequence[str]] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 max_dets: int = MAX_DETS,
                 encode_all_masks: bool = False,
                 file_client_args: Optional[dict] = None) -> None:
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir)
        if file_client_args is not None:
            raise RuntimeError('`file_client_args` is deprecated, use '
                               '`backend_args` instead')
        self.metrics = list(metric) if isinstance(metric,
                                                  (list, tuple)) else [metric]
        for m in self.metrics:
            if m in ('proposal', 'proposal_fast'):
                raise KeyError(
                    f'FastLVISMetric: metric {m!r} is not provided; use '
                    "mmdet's LVISMetric for proposal recall")
            if m not in ('bbox', 'segm'):
                raise KeyError(f"metric should be 'bbox' or 'segm', got "
                               f'{m!r}')
        if ann_file is None:
            raise ValueError(
                'FastLVISMetric needs ann_file: LVIS evaluation reads each '
                "image's neg_category_ids and not_exhaustive_category_ids "
                'from the annotation file')
        if metric_items is not None:
            unknown = set(metric_items) - set(RESULT_KEYS)
            if unknown:
                raise KeyError(f'metric_items {sorted(unknown)}: not among '
                               f'{list(RESULT_KEYS)}')
        if format_only and outfile_prefix is None:
            raise ValueError('format_only needs outfile_prefix')
        self.ann_file, self.backend_args = ann_file, backend_args
        self.classwise, self.metric_items = classwise, metric_items
        self.format_only, self.outfile_prefix = format_only, outfile_prefix
        # accepted and, as in mmdet for bbox / segm, not used
        self.proposal_nums, self.iou_thrs = list(proposal_nums), iou_thrs
        self.max_dets = max_dets
        self.encode_all_masks = encode_all_masks or outfile_prefix is not None
        self._gt: Optional[LVISGroundTruth] = None
        self.last_results: Dict[str, dict] = {}
        self.last_timings: Dict[str, dict] = {}

    # ------------------------------------------------------------------
    @property
    def gt(self) -> LVISGroundTruth:
        """The annotations, read on first use (by every rank)."""
        if self._gt is None:
            self._gt = LVISGroundTruth.from_file(
                self.ann_file,
                with_masks='segm' in self.metrics,
                backend_args=self.backend_args)
        return self._gt

    def _needed_masks(self, img_id: int, labels: np.ndarray,
                      scores: np.ndarray) -> Optional[np.ndarray]:
        """The masks LVIS evaluates: the max_dets best detections whose
        category is annotated in the image (None: all)."""
        if self.encode_all_masks:
            return None
        gt = self.gt
        pos = gt.image_position(img_id)
        need = np.zeros(len(labels), bool)
        if pos < 0 or len(labels) == 0:
            return need
        if labels.min() < 0 or labels.max() >= len(gt.label_to_cat):
            return None  # compute_metrics reports it
        keys = pos * gt.num_cats + gt.label_to_cat[labels]
        need = _member(keys, gt.any_pos_keys)
        if self.max_dets >= 0 and len(scores) > self.max_dets:
            top = np.argsort(-scores.astype(np.float64),
                             kind='stable')[:self.max_dets]
            in_top = np.zeros(len(scores), bool)
            in_top[top] = True
            need &= in_top
        return need

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as arrays (masks: RLE bytes)."""
        for sample in data_samples:
            pred = sample['pred_instances']
            rec = dict(
                img_id=int(sample['img_id']),
                bboxes=_to_numpy(pred['bboxes'], np.float32).reshape(-1, 4),
                scores=_to_numpy(pred['scores'], np.float32).reshape(-1),
                labels=_to_numpy(pred['labels'], np.int32).reshape(-1))
            if 'mask_scores' in pred:
                rec['mask_scores'] = _to_numpy(pred['mask_scores'],
                                               np.float32).reshape(-1)
            if 'masks' in pred and 'segm' in self.metrics:
                need = self._needed_masks(
                    rec['img_id'], rec['labels'],
                    rec.get('mask_scores', rec['scores']))
                blob, offsets = encode_mask_rles(pred['masks'], need)
                rec['mask_rles'] = blob
                rec['mask_offsets'] = offsets
                rec['mask_size'] = tuple(int(s) for s in _mask_size(
                    pred['masks'], sample))
            self.results.append(rec)

    # ------------------------------------------------------------------
    def evaluate(self, size: int) -> dict:
        """With several ranks, each matches the images it processed and
        rank 0 only accumulates (``lvis_shards``); one process, or result
        files to write: ``BaseMetric.evaluate``."""
        if get_dist_info()[1] > 1 and self.outfile_prefix is None:
            return evaluate_sharded(self, size)
        return super().evaluate(size)

    def has_masks(self, results: Optional[list] = None) -> bool:
        """Whether any of ``results`` (default: those processed) has
        masks."""
        results = self.results if results is None else results
        return any(r.get('mask_offsets') is not None for r in results)

    def _check_masks(self, any_masks: bool) -> None:
        if 'segm' in self.metrics and not any_masks:
            raise KeyError("FastLVISMetric: metric 'segm' but the "
                           'predictions have no masks')

    def match_shard(self, results: list, any_masks: bool) -> dict:
        """The per-image part of the evaluation of one rank's images;
        ``any_masks``: whether any rank's predictions have masks (a rank
        whose images have none matches no segm detection, as one process
        does)."""
        gt = self.gt
        dets = LVISDetections(results, gt)
        matched, timings = {}, {}
        if dets.num:
            self._check_masks(any_masks)
            cache: dict = {}
            for metric in self.metrics:
                timings[metric] = {}
                matched[metric] = match_lvis(gt, dets, metric, self.max_dets,
                                             timings[metric], cache)
        return dict(num=dets.num, matched=matched, timings=timings)

    def metrics_from_matched(self, parts: List[dict]) -> Dict[str, float]:
        """Rank 0: the metrics from every rank's :meth:`match_shard`."""
        logger: MMLogger = MMLogger.get_current_instance()
        eval_results: Dict[str, float] = OrderedDict()
        if not sum(p['num'] for p in parts):
            logger.info('The testing results of the whole dataset is empty.')
            return eval_results
        with_dets = [p for p in parts if p['num']]
        for metric in self.metrics:
            logger.info(f'Evaluating {metric} ({len(parts)} ranks matched '
                        'their own images)...')
            timings = dict(with_dets[0]['timings'][metric], ranks=len(parts))
            out = accumulate_parts(self.gt, with_dets, metric, timings)
            self._report(metric, out, timings, eval_results, logger)
        return eval_results

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        gt = self.gt
        dets = LVISDetections(results, gt)
        eval_results = OrderedDict()
        if self.outfile_prefix is not None:
            files = self.results2json(dets, gt, self.outfile_prefix)
            logger.info(f'results are saved in {files}')
            if self.format_only:
                return eval_results
        if dets.num == 0:
            logger.info('The testing results of the whole dataset is empty.')
            return eval_results
        self._check_masks(self.has_masks(results))
        cache: dict = {}
        for metric in self.metrics:
            logger.info(f'Evaluating {metric}...')
            timings: dict = {}
            out = evaluate_lvis(
                gt, dets, metric, max_dets=self.max_dets, timings=timings,
                cache=cache)
            self._report(metric, out, timings, eval_results, logger)
        return eval_results

    def _report(self, metric: str, out: dict, timings: dict,
                eval_results: dict, logger) -> None:
        """Keep, log and add to ``eval_results`` the numbers of one kind."""
        self.last_results[metric] = out['results']
        self.last_timings[metric] = timings
        items = self.metric_items or [
            'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf'
        ]
        if self.classwise:
            self._log_classwise(out['precision'], self.gt, eval_results,
                                logger)
        for k, v in out['results'].items():
            if k in items:
                eval_results[f'{metric}_{k}'] = float(f'{float(v):.3f}')
        logger.info(_results_table(metric, out['results']) +
                    f'\n{metric} evaluation: {timings}')

    def _log_classwise(self, precisions, gt, eval_results, logger):
        from terminaltables import AsciiTable
        per_cat = []
        for idx, cat_id in enumerate(gt.cat_ids.tolist()):
            precision = precisions[:, :, idx, 0]
            precision = precision[precision > -1]
            ap = float(np.mean(precision)) if precision.size else float('nan')
            name = gt.cat_names[cat_id]
            per_cat.append((name, f'{ap:0.3f}'))
            eval_results[f'{name}_precision'] = round(ap, 3)
        num_columns = min(6, len(per_cat) * 2)
        flat = list(itertools.chain(*per_cat))
        headers = ['category', 'AP'] * (num_columns // 2)
        rows = itertools.zip_longest(
            *[flat[i::num_columns] for i in range(num_columns)])
        logger.info('\n' + AsciiTable([headers] + list(rows)).table)

    def results2json(self, dets: LVISDetections, gt: LVISGroundTruth,
                     outfile_prefix: str) -> Dict[str, str]:
        """mmdet's result files, written as a stream."""
        files = {}
        cat_of_label = np.array(gt.file_cat_ids, np.int64)
        for metric in ('bbox', 'segm'):
            if metric == 'segm' and 'segm' not in self.metrics:
                continue
            path = f'{outfile_prefix}.{metric}.json'
            with open(path, 'w', encoding='utf-8') as f:
                f.write('[')
                first = True
                for rec in dets.records:
                    has_masks = rec.get('mask_offsets') is not None
                    if metric == 'segm' and not has_masks:
                        continue
                    scores = rec.get('mask_scores') if metric == 'segm' \
                        else None
                    if scores is None:
                        scores = rec['scores']
                    size = list(rec.get('mask_size', ()))
                    for i, box in enumerate(np.asarray(rec['bboxes'],
                                                       np.float32).tolist()):
                        entry = dict(
                            image_id=rec['img_id'],
                            bbox=[box[0], box[1], box[2] - box[0],
                                  box[3] - box[1]],
                            score=float(scores[i]),
                            category_id=int(
                                cat_of_label[int(rec['labels'][i])]))
                        if metric == 'segm':
                            off = rec['mask_offsets']
                            entry['segmentation'] = dict(
                                size=size,
                                counts=rec['mask_rles'][off[i]:off[i + 1]]
                                .decode())
                        f.write(('' if first else ', ') + json.dumps(entry))
                        first = False
                f.write(']')
            files[metric] = path
        return files


def _mask_size(masks, sample) -> Tuple[int, int]:
    if isinstance(masks, (list, tuple)):
        if masks:
            return tuple(masks[0]['size'])
        return tuple(sample['ori_shape'][:2])
    return tuple(masks.shape[-2:])


def _results_table(metric: str, results: Dict[str, float]) -> str:
    lines = [f'LVIS {metric} (lvis-api definitions, max_dets {MAX_DETS}):']
    for key, value in results.items():
        lines.append(f'  {key:<8} {value:.3f}')
    return '\n'.join(lines)

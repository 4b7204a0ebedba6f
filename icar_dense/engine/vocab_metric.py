# Copyright (c) icar_dense contributors. All rights reserved.
"""``VocabularyMetric``: a metric on the classes shared by a vocabulary and
the dataset (``tools/test.py --vocabulary``).

The classes are matched by name as :mod:`icar_dense.engine.vocab_eval`
describes; the wrapped detection / segmentation metric sees labels
re-indexed into the evaluated classes, and a COCO / LVIS ``ann_file``
restricted to them (:func:`restrict_annotation_file`).
"""
import copy
import json
import logging
import os.path as osp
import tempfile
from typing import Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import print_log
from mmengine.registry import METRICS

from .vocab_eval import (class_key, describe_classes, match_classes,
                         remap_instances, remap_seg)


def restrict_annotation_file(ann_file: str, classes: Sequence[str],
                             out_file: str) -> str:
    """Write a COCO / LVIS annotation file with only ``classes``.

    Categories (in the file's order), their annotations and the LVIS image
    fields ``neg_category_ids`` / ``not_exhaustive_category_ids`` are kept
    for the named classes only; images are all kept.
    """
    with get_local_path(ann_file) as path:
        with open(path) as f:
            data = json.load(f)
    keys = {class_key(c) for c in classes}
    cats = [c for c in data['categories'] if class_key(c['name']) in keys]
    ids = {c['id'] for c in cats}
    data['categories'] = cats
    data['annotations'] = [
        a for a in data.get('annotations', []) if a['category_id'] in ids
    ]
    for image in data.get('images', []):
        for key in ('neg_category_ids', 'not_exhaustive_category_ids'):
            if key in image:
                image[key] = [i for i in image[key] if i in ids]
    with open(out_file, 'w') as f:
        json.dump(data, f)
    return out_file


def _metric_type(cfg: dict) -> str:
    kind = cfg.get('type', '')
    return kind.__name__ if isinstance(kind, type) else str(kind)


@METRICS.register_module()
class VocabularyMetric(BaseMetric):
    """A detection / segmentation metric on the classes shared by the
    vocabulary and the dataset (see the module docstring).

    The wrapped metric is built when the dataset's metainfo arrives (from a
    :class:`VocabularyDataset`): its ``dataset_meta`` lists the evaluated
    classes (the dataset's classes that are in the vocabulary; in the
    annotation file's order for a metric with ``ann_file``, else in the
    vocabulary's order), its ``ann_file`` (COCO / LVIS) is restricted to them
    (a copy in a temporary folder), and every prediction / ground-truth
    label is re-indexed from the vocabulary into them.  Detections of
    vocabulary classes without ground truth are dropped from the
    evaluation; pixels predicted as such a class count for no class (a miss
    of their true class).  Without a ``VocabularyDataset`` it is the
    wrapped metric.

    Args:
        metric (dict): The metric config (``CocoMetric``, ``LVISMetric``,
            ``OVCocoAP50Metric``, ``IoUMetric``, ...).
    """

    def __init__(self, metric: dict, **kwargs) -> None:
        # the wrapped metric prefixes the keys (coco/, lvis/, ...)
        kwargs.setdefault('prefix', 'vocabulary')
        super().__init__(**kwargs)
        if not isinstance(metric, dict):
            raise TypeError('VocabularyMetric: `metric` must be a config '
                            f'dict, got {type(metric).__name__}')
        self.metric_cfg = copy.deepcopy(metric)
        self.metric: Optional[BaseMetric] = None
        self._lut: Optional[np.ndarray] = None
        self._num_evaluated = 0
        self._note = ''
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta: dict) -> None:
        self._dataset_meta = copy.deepcopy(meta)
        cfg = copy.deepcopy(self.metric_cfg)
        inner = (meta or {}).get('dataset_metainfo')
        if inner is None:  # not a VocabularyDataset: plain metric
            self.metric = METRICS.build(cfg)
            self.metric.dataset_meta = meta
            self._lut = None
            return
        vocab = list(meta['classes'])
        dataset_classes = list(inner['classes'])
        to_vocab = match_classes(vocab, dataset_classes)
        # evaluated classes: in the annotation file's order where a COCO /
        # LVIS file is read (its metrics map labels to categories in that
        # order), else in the vocabulary's order (per-class tables)
        rows = [i for i in range(len(dataset_classes)) if to_vocab[i] >= 0]
        if not cfg.get('ann_file'):
            rows.sort(key=lambda i: to_vocab[i])
        evaluated = [dataset_classes[i] for i in rows]
        lut = np.full(len(vocab), -1, dtype=np.int64)
        for k, i in enumerate(rows):
            lut[to_vocab[i]] = k
        self._lut = lut
        self._num_evaluated = len(evaluated)
        keys = {class_key(c) for c in evaluated}
        sub = dict(inner)
        sub['classes'] = tuple(evaluated)
        for key in ('base_classes', 'novel_classes'):
            if key in inner:
                sub[key] = tuple(c for c in inner[key]
                                 if class_key(c) in keys)
        for key in ('palette', 'frequencies'):
            if inner.get(key) is not None and len(inner[key]) == len(
                    dataset_classes):
                sub[key] = [inner[key][i] for i in rows]
        if cfg.get('unseen_classes'):
            unseen = [c for c in cfg['unseen_classes']
                      if class_key(c) in keys]
            if unseen:
                cfg['unseen_classes'] = unseen
            else:  # no unseen class left: a plain IoU
                cfg.pop('unseen_classes')
                cfg['type'] = 'IoUMetric'
        if cfg.get('ann_file') and len(evaluated) < len(dataset_classes):
            self._tmp = tempfile.TemporaryDirectory(prefix='icar_vocab_')
            cfg['ann_file'] = restrict_annotation_file(
                cfg['ann_file'], evaluated,
                osp.join(self._tmp.name, osp.basename(cfg['ann_file'])))
        if not evaluated:
            raise ValueError(
                f'--vocabulary: none of its {len(vocab)} classes is a class '
                f'of the dataset ({describe_classes(dataset_classes)}); '
                'nothing to '
                f'evaluate with {_metric_type(cfg)} (run without an '
                'evaluator to only predict: --cfg-options '
                'test_evaluator=None is not enough for mmengine; use '
                '--out / --show-dir with a vocabulary that shares a class)')
        self.metric = METRICS.build(cfg)
        self.metric.dataset_meta = sub
        no_gt = [n for j, n in enumerate(vocab) if lut[j] < 0]
        missing = [c for c, j in zip(dataset_classes, to_vocab) if j < 0]
        notes = [
            f'{_metric_type(cfg)} on {len(evaluated)} classes (the '
            'vocabulary classes that are classes of the dataset)'
        ]
        if no_gt:
            notes.append(
                f'no ground truth, not evaluated: {len(no_gt)} vocabulary '
                f'classes {describe_classes(no_gt)}')
        if missing:
            notes.append(
                f'not in the vocabulary, not evaluated: {len(missing)} '
                f'dataset classes {describe_classes(missing)}')
        self._note = '--vocabulary: ' + '; '.join(notes)

    def __del__(self):
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------
    def _remap(self, sample: dict) -> dict:
        lut = self._lut
        sample = dict(sample)
        for key in ('pred_instances', 'gt_instances', 'ignored_instances'):
            if sample.get(key) is not None:
                sample[key] = remap_instances(sample[key], lut)
        if sample.get('gt_sem_seg') is not None:
            sample['gt_sem_seg'] = remap_seg(sample['gt_sem_seg'], lut)
        if sample.get('pred_sem_seg') is not None:
            # a pixel of a class without ground truth: a value outside the
            # evaluated classes, counted for none of them (IoUMetric's
            # histograms stop at num_classes - 1), a miss of its true class
            sample['pred_sem_seg'] = remap_seg(
                sample['pred_sem_seg'], lut,
                fill=max(self._num_evaluated, 256))
        if 'seg_logits' in sample:
            sample.pop('seg_logits')  # vocabulary space; not evaluated
        return sample

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        if self.metric is None:
            raise RuntimeError('VocabularyMetric: dataset_meta was never set')
        if self._lut is not None:
            data_samples = [self._remap(s) for s in data_samples]
        self.metric.process(data_batch, data_samples)

    def compute_metrics(self, results: list) -> dict:
        return self.metric.compute_metrics(results)

    def evaluate(self, size: int) -> dict:
        level = logging.WARNING if 'not evaluated' in self._note else \
            logging.INFO
        if self._note:
            print_log(self._note, logger='current', level=level)
        metrics = self.metric.evaluate(size)
        if self._note:  # again next to the numbers
            print_log(self._note, logger='current', level=level)
        return metrics


__all__ = ['VocabularyMetric', 'restrict_annotation_file']

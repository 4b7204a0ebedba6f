# Copyright (c) icar_dense contributors. All rights reserved.
"""Testing a dataset with annotations on another class list.

``tools/test.py CONFIG CKPT --vocabulary ...`` gives the model a new class
list (:func:`icar_dense.engine.testing.use_vocabulary`); the dataset keeps
its own classes (a COCO / LVIS annotation file, ADE20K label maps, a video
list).  The two are matched **by name** (case, ``_`` and spaces ignored, as
``'traffic_light'`` / ``'Traffic light'``), never by position, and:

* the model predicts the vocabulary's classes, in the vocabulary's order:
  labels, ``--show-dir`` pictures and ``--out`` predictions use its names;
* the evaluated classes are the vocabulary classes that are classes of the
  dataset (what mmdet / mmseg do with a ``metainfo.classes`` subset):

  - a **vocabulary class that is not a class of the dataset** has no ground
    truth: it gets no AP / IoU row and is not in any mean; its detections
    are left out of the box / mask AP (as COCO leaves out a category without
    annotations), pixels predicted as it are misses of their true class,
    and for video it is simply a wrong answer;
  - a **dataset class that is not in the vocabulary** cannot be predicted,
    so it is not evaluated: its boxes / masks are not in the evaluation, its
    pixels are ignored (mmseg's ``label_map``), its videos are left out;

  both lists are logged, naming the classes, when the dataset is built and
  again next to the metrics.

:class:`VocabularyDataset` wraps the test dataset (ground-truth labels
re-indexed into the vocabulary, videos of other classes dropped);
:class:`~icar_dense.engine.vocab_metric.VocabularyMetric` wraps a detection or
segmentation metric (labels re-indexed into the evaluated classes; a COCO /
LVIS ``ann_file`` is restricted to them).  Both are registered in
mmengine's root registries, so every task's config can name them.
"""
import copy
import logging
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.registry import DATASETS

__all__ = [
    'VocabularyDataset', 'class_key', 'describe_classes', 'match_classes',
    'remap_instances', 'remap_seg'
]


def class_key(name: str) -> str:
    """The key two class names are matched by (case / ``_`` ignored)."""
    from icar_dense.models.text import readable_name
    return readable_name(str(name)).lower()


def match_classes(vocabulary: Sequence[str],
                  dataset_classes: Sequence[str],
                  where: str = 'the vocabulary') -> np.ndarray:
    """``out[i]`` = index in ``vocabulary`` of dataset class ``i``, or -1."""
    keys: Dict[str, int] = {}
    for j, name in enumerate(vocabulary):
        key = class_key(name)
        if key in keys:
            raise ValueError(
                f'{where}: {vocabulary[keys[key]]!r} and {name!r} are the '
                'same class name (case and "_" are ignored when a '
                'vocabulary is matched to the dataset classes)')
        keys[key] = j
    return np.array([keys.get(class_key(c), -1) for c in dataset_classes],
                    dtype=np.int64)


def describe_classes(names: Sequence[str], limit: int = 20) -> str:
    names = list(names)
    more = f' ... ({len(names)} in all)' if len(names) > limit else ''
    return f'{names[:limit]}{more}'


def _remap_labels(labels, lut: np.ndarray):
    """``lut[labels]`` for a tensor / array of labels (-1: not mapped)."""
    if isinstance(labels, torch.Tensor):
        table = torch.as_tensor(lut, device=labels.device)
        return table[labels.long()].to(labels.dtype)
    return lut[np.asarray(labels, dtype=np.int64)]


def remap_instances(instances, lut: np.ndarray):
    """Re-index ``labels`` of an ``InstanceData`` (or its dict) with ``lut``,
    dropping the instances whose label maps to -1."""
    if instances is None:
        return instances
    labels = instances['labels'] if isinstance(
        instances, dict) else getattr(instances, 'labels', None)
    if labels is None:
        return instances
    new = _remap_labels(labels, lut)
    # integer indices: mmdet's mask structures take no boolean tensors
    index = np.flatnonzero(np.asarray(
        new.cpu() if isinstance(new, torch.Tensor) else new) >= 0)
    if isinstance(instances, dict):
        num = len(labels)
        out = {}
        for key, value in instances.items():
            if key == 'labels':
                continue
            if hasattr(value, '__len__') and not isinstance(
                    value, (str, bytes)) and len(value) == num:
                if isinstance(value, torch.Tensor):
                    value = value[torch.as_tensor(index, device=value.device)]
                elif isinstance(value, (list, tuple)):
                    value = type(value)(value[i] for i in index)
                else:  # numpy arrays, mmdet mask structures
                    value = value[index]
            out[key] = value
        out['labels'] = _take(new, index)
        return out
    out = instances[torch.as_tensor(index, dtype=torch.long)]
    out.labels = _take(new, index)
    return out


def _take(values, index: np.ndarray):
    if isinstance(values, torch.Tensor):
        return values[torch.as_tensor(index, device=values.device)]
    return values[index]


def remap_seg(pixel_data,
              lut: np.ndarray,
              ignore_index: int = 255,
              fill: Optional[int] = None):
    """Re-index a label map: label ``i < len(lut)`` -> ``lut[i]``, -1 there
    -> ``fill`` (default ``ignore_index``); other values (the ignore index)
    stay themselves."""
    data = pixel_data['data'] if isinstance(pixel_data,
                                            dict) else pixel_data.data
    fill = ignore_index if fill is None else fill
    size = max(int(data.max()) + 1 if data.numel() else 1, ignore_index + 1,
               len(lut))
    full = np.arange(size, dtype=np.int64)
    full[:len(lut)] = np.where(lut >= 0, lut, fill)
    new = torch.as_tensor(full, device=data.device)[data.long()].to(data.dtype)
    if isinstance(pixel_data, dict):
        out = dict(pixel_data)
        out['data'] = new
        return out
    pixel_data.data = new
    return pixel_data


def _get(sample, key):
    if isinstance(sample, dict):
        return sample.get(key)
    return getattr(sample, key, None) if key in sample else None


def _set(sample, key, value):
    if isinstance(sample, dict):
        sample[key] = value
    else:
        setattr(sample, key, value)


def _palette(inner_palette, lut: np.ndarray, num: int) -> Optional[list]:
    """A colour per vocabulary class: the dataset's colour where the class is
    one of the dataset's, a fixed pseudo-random one otherwise."""
    if not inner_palette:
        return None
    rng = np.random.RandomState(42)
    colours = [tuple(int(c) for c in rng.randint(0, 256, 3))
               for _ in range(num)]
    for i, j in enumerate(lut):
        if j >= 0 and i < len(inner_palette):
            colours[j] = tuple(inner_palette[i])
    return colours


@DATASETS.register_module()
class VocabularyDataset:
    """A test dataset seen through another class list (``--vocabulary``).

    The wrapped dataset is built as configured; its classes are matched to
    the vocabulary by name (see the module docstring).  Ground-truth labels
    (detection instances, segmentation maps, video labels) are re-indexed
    into the vocabulary after the pipeline; instances and pixels of dataset
    classes outside it are dropped / ignored, videos of such classes are
    left out.  ``metainfo['classes']`` is the vocabulary; the dataset's own
    metainfo is kept under ``metainfo['dataset_metainfo']`` for
    :class:`VocabularyMetric`.

    Args:
        dataset (dict | Dataset): The test dataset (config).
        vocabulary (str | list[str]): The vocabulary (anything
            :func:`icar_dense.models.text.load_vocabulary` reads) or, for an
            embeddings file, its class names.
        dataset_classes (str | list[str], optional): The names of the
            dataset's labels when its metainfo has none (a video list whose
            labels index the class list the config's model was given);
            ``use_vocabulary`` passes the config's vocabulary.
        **overrides: Keys of ``dataset`` to replace (``MultiSplitTestLoop``
            gives each split's ``ann_file`` / ``classes`` this way).
    """

    def __init__(self,
                 dataset: Union[dict, object],
                 vocabulary: Union[str, Sequence[str]],
                 dataset_classes: Optional[Union[str, Sequence[str]]] = None,
                 **overrides) -> None:
        from icar_dense.models.text import load_vocabulary
        if isinstance(dataset, dict):
            dataset = copy.deepcopy(dataset)
            dataset.update(overrides)
            self.dataset = DATASETS.build(dataset)
        else:
            if overrides:
                raise TypeError(f'VocabularyDataset: {sorted(overrides)} '
                                'need a dataset config, got a dataset')
            self.dataset = dataset
        self.vocabulary = load_vocabulary(vocabulary)
        names = list(self.vocabulary.names)
        inner_meta = copy.deepcopy(dict(self.dataset.metainfo))
        if not inner_meta.get('classes') and dataset_classes is not None:
            # e.g. a Kinetics video list: label i is class i of the class
            # list the config's model was given
            inner_meta['classes'] = tuple(
                load_vocabulary(dataset_classes).names)
        if not inner_meta.get('classes'):
            raise ValueError(
                f'VocabularyDataset: {type(self.dataset).__name__} names no '
                "classes (metainfo['classes']) and no dataset_classes were "
                'given, so its labels cannot be matched to the vocabulary '
                'by name')
        dataset_classes = [str(c) for c in inner_meta['classes']]
        source = getattr(self.vocabulary, 'source', 'the vocabulary')
        self.label_map = match_classes(names, dataset_classes,
                                       f'--vocabulary ({source})')
        found = set(self.label_map[self.label_map >= 0].tolist())
        self.no_ground_truth = [
            n for j, n in enumerate(names) if j not in found
        ]
        self.not_in_vocabulary = [
            c for c, j in zip(dataset_classes, self.label_map) if j < 0
        ]
        base = {class_key(c) for c in inner_meta.get('base_classes', ())}

        def vocab_names(keys):
            return tuple(n for n in names if class_key(n) in keys)

        meta = dict(inner_meta)
        meta.update(
            classes=tuple(names),
            dataset_metainfo=inner_meta,
            no_ground_truth=tuple(self.no_ground_truth),
            not_in_vocabulary=tuple(self.not_in_vocabulary))
        if 'base_classes' in inner_meta or 'novel_classes' in inner_meta:
            # classes never trained on: the dataset's novel ones and those
            # the dataset does not have
            meta['base_classes'] = vocab_names(base)
            meta['novel_classes'] = tuple(
                n for n in names if class_key(n) not in base)
        if 'frequencies' in inner_meta:
            meta.pop('frequencies')
        palette = _palette(inner_meta.get('palette'), self.label_map,
                           len(names))
        if palette is not None:
            meta['palette'] = palette
        self._metainfo = meta
        self._indices = self._kept_indices()
        self.dataset_name = type(self.dataset).__name__
        print_log(
            self.summary(),
            logger='current',
            level=logging.WARNING if self.no_ground_truth
            or self.not_in_vocabulary else logging.INFO)

    # ------------------------------------------------------------------
    def summary(self) -> str:
        where = getattr(self.dataset, 'ann_file', '') or self.dataset_name
        lines = [
            f'--vocabulary: {len(self.vocabulary)} classes '
            f'({self.vocabulary.source}); {where} has '
            f'{len(self.label_map)} classes, '
            f'{int((self.label_map >= 0).sum())} of them in the vocabulary '
            '(evaluated).'
        ]
        if self.no_ground_truth:
            lines.append(
                f'  {len(self.no_ground_truth)} vocabulary classes are not '
                f'classes of the dataset (no ground truth, not evaluated): '
                f'{describe_classes(self.no_ground_truth)}')
        if self.not_in_vocabulary:
            lines.append(
                f'  {len(self.not_in_vocabulary)} dataset classes are not in '
                'the vocabulary (cannot be predicted, their ground truth is '
                f'not evaluated): {describe_classes(self.not_in_vocabulary)}')
        return '\n'.join(lines)

    def _kept_indices(self) -> Optional[List[int]]:
        """Videos (one integer label each) of classes outside the
        vocabulary are left out; images are all kept."""
        n = len(self.dataset)
        if n == 0:
            return None
        first = self.dataset.get_data_info(0)
        if not isinstance(first.get('label'), (int, np.integer)):
            return None
        kept = [
            i for i in range(n)
            if self.label_map[int(self.dataset.get_data_info(i)['label'])] >=
            0
        ]
        if not kept:
            raise ValueError(
                f'--vocabulary ({self.vocabulary.source}): none of the '
                f'{n} samples of {type(self.dataset).__name__} belongs to a '
                'class of the vocabulary; its classes are '
                + describe_classes(
                    self._metainfo['dataset_metainfo']['classes']))
        if len(kept) < n:
            print_log(
                f'--vocabulary: {n - len(kept)} of the {n} samples of '
                f'{type(self.dataset).__name__} belong to classes outside the '
                'vocabulary and are left out', logger='current')
        return kept

    # ------------------------------------------------------------------
    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self._metainfo)

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return (len(self._indices)
                if self._indices is not None else len(self.dataset))

    def _inner_index(self, idx: int) -> int:
        return self._indices[idx] if self._indices is not None else idx

    def get_data_info(self, idx: int) -> dict:
        info = copy.deepcopy(self.dataset.get_data_info(
            self._inner_index(idx)))
        if isinstance(info.get('label'), (int, np.integer)):
            info['label'] = int(self.label_map[int(info['label'])])
        for inst in info.get('instances', []) or []:
            for key in ('bbox_label', 'label'):
                if key in inst:
                    inst[key] = int(self.label_map[int(inst[key])])
        return info

    def __getitem__(self, idx: int):
        data = self.dataset[self._inner_index(idx)]
        if isinstance(data, dict) and 'data_samples' in data:
            samples = data['data_samples']
            for sample in (samples
                           if isinstance(samples, (list, tuple)) else
                           [samples]):
                self._remap_sample(sample)
        return data

    def _remap_sample(self, sample) -> None:
        lut = self.label_map
        for key in ('gt_instances', 'ignored_instances'):
            value = _get(sample, key)
            if value is not None:
                _set(sample, key, remap_instances(value, lut))
        seg = _get(sample, 'gt_sem_seg')
        if seg is not None:
            _set(sample, 'gt_sem_seg', remap_seg(seg, lut))
        label = _get(sample, 'gt_label')
        if label is not None:
            new = _remap_labels(label, lut)
            if isinstance(sample, dict):
                sample['gt_label'] = new
            elif hasattr(sample, 'set_gt_label'):
                sample.set_gt_label(new)
            else:
                sample.gt_label = new

    def __getattr__(self, name: str):
        # ann_file, test_mode, ... of the wrapped dataset
        if name.startswith('__') or name in ('dataset', '_metainfo',
                                             '_indices'):
            raise AttributeError(name)
        return getattr(self.__dict__['dataset'], name)

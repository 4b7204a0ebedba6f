"""Cheap checks of dataset files, run when a dataset is built.

A wrong annotation file must fail before any inference, with a message that
names the file, the record and the field, instead of being merged, dropped
or scored without a word (or failing deep inside pycocotools / the LVIS
evaluator after the whole test set ran).  One layer per kind of input:

* **COCO / LVIS json** (:mod:`.coco_checks` on the parsed json,
  :class:`~icar_dense.datasets.det_validation.DetAnnotationChecks` in the
  mmdet datasets; :func:`check_detection_annotations`, run by
  ``OVCocoDataset``, ``OVLVISV1Dataset`` and ``ValidatedCocoDataset`` on the
  parsed json *before* the COCO / LVIS API indexes it): unique image,
  annotation and category ids; every image has ``width`` / ``height`` and
  its file name; every annotation points at a known image and a category of
  ``categories`` and has a 4-number ``bbox`` and an ``area``;
  ``segmentation`` when the pipeline loads masks; for LVIS test sets the
  per-image ``neg_category_ids`` / ``not_exhaustive_category_ids`` that LVIS
  AP reads.  The checks are C-level passes over the columns of the json
  the dataset parses anyway (``map``, ``set``, ``sum``): a few percent of
  its load.  Boxes that mmdet drops (zero or negative size, under 1 px,
  outside the image, area <= 0) are counted while mmdet parses them (only
  images that lost annotations are looked at) and reported in a single
  warning with the counts.
* **Segmentation maps**: :class:`~icar_dense.datasets.transforms.CheckSegMap`
  (a transform after ``LoadAnnotations``).
* **Video lists** (:func:`check_video_labels`, used by
  ``ZeroShotVideoDataset`` and ``ValidatedVideoDataset``): labels outside
  the class list name the list file and the line.  Unreadable or empty
  video files are :class:`~icar_dense.datasets.transforms.SafeLoad`'s job.
"""
import json
from typing import Any, List, Optional

__all__ = ['AnnotationError', 'read_json', 'check_video_labels']


class AnnotationError(ValueError):
    """An annotation file that cannot be right.

    Attributes:
        path (str): The file.
        record (str, optional): The record at fault, e.g. ``'images[3]'``.
        field (str, optional): The field at fault, e.g. ``'width'``.
    """

    def __init__(self,
                 message: str,
                 path: Optional[str] = None,
                 record: Optional[str] = None,
                 field: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path
        self.record = record
        self.field = field


def read_json(path: str, shown: Optional[str] = None) -> Any:
    """``json.load`` whose syntax errors name the file, line and column."""
    shown = shown or path
    try:
        with open(path, encoding='utf-8-sig') as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f'{shown}, line {err.lineno} column {err.colno}: invalid JSON: '
            f'{err.msg}', shown) from None
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f'{shown}: not UTF-8 text (byte {err.start}: {err.reason}); '
            'JSON files must be UTF-8', shown) from None


def check_video_labels(data_list: List[dict],
                       ann_file: str,
                       num_classes: int,
                       classes: str = 'the class list') -> None:
    """Labels of an mmaction video list (``path label``, one video per line,
    ``data_list[i]`` from line ``i + 1``) inside ``[0, num_classes)``."""
    bad, missing = [], []
    for i, item in enumerate(data_list):
        label = item.get('label')
        labels = label if isinstance(label, (list, tuple)) else [label]
        if label is None or label == -1:
            missing.append(i)
        elif any(not isinstance(v, int) or not 0 <= v < num_classes
                 for v in labels):
            bad.append(i)
    if missing:
        i = missing[0]
        more = (f' ({len(missing) - 1} more lines without a label)'
                if len(missing) > 1 else '')
        raise AnnotationError(
            f'{ann_file}, line {i + 1}: video '
            f'{data_list[i].get("filename")!r} has no label (expected '
            f'"VIDEO_PATH LABEL"){more}', ann_file, f'line {i + 1}', 'label')
    if bad:
        i = bad[0]
        more = (f'; {len(bad)} lines have labels outside it'
                if len(bad) > 1 else '')
        raise AnnotationError(
            f'{ann_file}, line {i + 1}: video '
            f'{data_list[i].get("filename")!r} has label '
            f'{data_list[i]["label"]!r}, outside the class list: {classes} '
            f'names only {num_classes} classes (labels 0..{num_classes - 1})'
            f'{more}', ann_file, f'line {i + 1}', 'label')

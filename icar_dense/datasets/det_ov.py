"""Detection datasets with a base/novel category split.

The open-vocabulary protocols train on the *base* categories only and test on
all of them:

* LVIS v1 (ViLD protocol): base = frequent + common (866), novel = rare
  (337).  The split comes from each category's ``frequency`` field of the
  annotation file; the training set keeps every image and only loses the
  annotations of novel categories.
* COCO (OVR-CNN protocol): 48 base and 17 novel categories, chosen by name
  (:data:`COCO_OVR_BASE_CLASSES`, :data:`COCO_OVR_NOVEL_CLASSES`); the other
  15 COCO categories are not used.

Both datasets keep the label space of *all* their classes (base and novel)
in training and testing, so a label means the same class everywhere; the
box head is told which classes it trains on (``train_classes``).  The split
is stored in ``metainfo`` (``base_classes``, ``novel_classes``) where the
metrics and the visualiser can read it.
"""
import copy
import json
import os.path as osp
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

from mmdet.datasets import CocoDataset, LVISV1Dataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path

from .det_validation import DetAnnotationChecks

LVIS_FREQUENCIES = ('f', 'c', 'r')

# OVR-CNN (Zareian et al., CVPR 2021) split of COCO 2017, in COCO id order.
COCO_OVR_BASE_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat',
    'bench', 'bird', 'horse', 'sheep', 'bear', 'zebra', 'giraffe', 'backpack',
    'handbag', 'suitcase', 'frisbee', 'skis', 'kite', 'surfboard', 'bottle',
    'fork', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed', 'toilet', 'tv',
    'laptop', 'mouse', 'remote', 'microwave', 'oven', 'toaster',
    'refrigerator', 'book', 'clock', 'vase', 'toothbrush')
COCO_OVR_NOVEL_CLASSES = ('airplane', 'bus', 'cat', 'dog', 'cow', 'elephant',
                          'umbrella', 'tie', 'snowboard', 'skateboard', 'cup',
                          'knife', 'cake', 'couch', 'keyboard', 'sink',
                          'scissors')
# the 65 classes of the protocol, in COCO category-id order (= label order)
COCO_OVR_CLASSES = tuple(
    name for name in CocoDataset.METAINFO['classes']
    if name in COCO_OVR_BASE_CLASSES + COCO_OVR_NOVEL_CLASSES)


def _check_frequencies(frequencies: Sequence[str], owner: str) -> tuple:
    if isinstance(frequencies, str):
        frequencies = tuple(frequencies)
    unknown = [f for f in frequencies if f not in LVIS_FREQUENCIES]
    if unknown or not frequencies:
        raise ValueError(f'{owner}: base_frequencies must be a non-empty '
                         f'subset of {LVIS_FREQUENCIES}, got {frequencies!r}')
    return tuple(frequencies)


def check_lvis_categories(categories: List[dict], ann_file: str) -> None:
    """Raise a clear error if categories lack LVIS ``frequency`` fields."""
    missing = [c.get('name', c.get('id')) for c in categories
               if c.get('frequency') not in LVIS_FREQUENCIES]
    if missing:
        raise KeyError(
            f'{ann_file}: {len(missing)} of {len(categories)} categories have '
            f"no LVIS 'frequency' field ('f', 'c' or 'r'), e.g. "
            f'{missing[:5]}; the base/novel split is read from it. Use an '
            'LVIS v1 annotation file (or add the field).')


@lru_cache(maxsize=8)
def _read_categories(path: str, mtime: float, size: int) -> Tuple[dict]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(
            data.get('categories'), list):
        raise ValueError(f'{path}: not a COCO/LVIS annotation file (no '
                         '"categories" list)')
    cats = sorted(data['categories'], key=lambda c: c['id'])
    # keep the metadata only, never the (large) annotation lists
    return tuple({k: v for k, v in c.items() if k != 'synonyms'}
                 for c in cats)


def load_categories(ann_file: str) -> List[dict]:
    """Categories of an annotation file, sorted by id (cached per file)."""
    with get_local_path(ann_file) as path:
        if not osp.isfile(path):
            raise FileNotFoundError(f'annotation file not found: {ann_file}')
        stat = osp.getsize(path), osp.getmtime(path)
        return copy.deepcopy(list(_read_categories(path, stat[1], stat[0])))


def lvis_split_names(ann_file: str,
                     base_frequencies: Sequence[str] = ('f', 'c')
                     ) -> Tuple[List[str], List[str]]:
    """(base, novel) category names of an LVIS file, in id order."""
    base_frequencies = _check_frequencies(base_frequencies, 'lvis split')
    cats = load_categories(ann_file)
    check_lvis_categories(cats, ann_file)
    base = [c['name'] for c in cats if c['frequency'] in base_frequencies]
    novel = [c['name'] for c in cats if c['frequency'] not in base_frequencies]
    return base, novel


class NovelAnnotationsDrop:
    """Mixin: with ``drop_novel_annotations`` a training image keeps only the
    boxes of base classes (``self.base_labels``), as in the OV protocols."""

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        if self.drop_novel_annotations:
            data_info['instances'] = [
                inst for inst in data_info['instances']
                if inst['bbox_label'] in self.base_labels
            ]
        return data_info


@DATASETS.register_module()
class OVLVISV1Dataset(DetAnnotationChecks, NovelAnnotationsDrop,
                      LVISV1Dataset):
    """LVIS v1 whose novel (by default: rare) annotations are dropped.

    The label space is every category of the annotation file, in category
    id order (as mmdet's ``LVISV1Dataset``); ``metainfo['classes']`` is set
    from the file, so a file with a subset of the LVIS categories (or another
    LVIS-format file) is named correctly.  The file is checked when the
    dataset is built (:mod:`icar_dense.datasets.validation`; test sets also
    need the per-image fields of LVIS AP).

    Args:
        base_frequencies (Sequence[str]): LVIS frequencies of the base
            categories. Defaults to ``('f', 'c')`` (866 categories).
        drop_novel_annotations (bool, optional): Remove the annotations of
            novel categories.  None (default) drops them in training
            (``test_mode=False``) and keeps them in testing.  Images are
            always kept.
        **kwargs: The arguments of ``LVISV1Dataset``.
    """

    lvis_format = True

    def __init__(self,
                 *args,
                 base_frequencies: Sequence[str] = ('f', 'c'),
                 drop_novel_annotations: Optional[bool] = None,
                 **kwargs) -> None:
        self.base_frequencies = _check_frequencies(base_frequencies,
                                                   type(self).__name__)
        self._drop_novel = drop_novel_annotations
        metainfo = kwargs.get('metainfo') or {}
        self._user_classes = metainfo.get('classes')
        super().__init__(*args, **kwargs)

    @property
    def drop_novel_annotations(self) -> bool:
        return (not self.test_mode
                if self._drop_novel is None else self._drop_novel)

    def load_data_list(self) -> List[dict]:
        """``LVISV1Dataset.load_data_list`` plus the category split."""
        with get_local_path(
                self.ann_file, backend_args=self.backend_args) as local_path:
            self.lvis = self.open_lvis(local_path)  # checked, then indexed
        self.cat_ids = self.lvis.get_cat_ids()
        if self.cat_ids != sorted(self.cat_ids):
            # mmdet's LVISMetric labels categories in file order, a text
            # vocabulary read from the file in id order: they must agree
            raise ValueError(
                f'{self.ann_file}: the categories are not sorted by id (as '
                'in the LVIS release); sort them')
        cats = self.lvis.load_cats(self.cat_ids)
        check_lvis_categories(cats, self.ann_file)
        names = tuple(c['name'] for c in cats)
        if self._user_classes is not None and tuple(
                self._user_classes) != names:
            raise ValueError(
                f'{type(self).__name__}: metainfo.classes '
                f'({len(self._user_classes)} names) differ from the '
                f'{len(names)} categories of {self.ann_file}; the LVIS label '
                'space (and LVIS AP) follows the annotation file, so leave '
                'metainfo.classes unset (to test on another class list: '
                'tools/test.py CONFIG CKPT --vocabulary ...)')
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.cat_img_map = copy.deepcopy(self.lvis.cat_img_map)
        self.base_labels = {
            i
            for i, c in enumerate(cats)
            if c['frequency'] in self.base_frequencies
        }
        self._metainfo.update(
            classes=names,
            frequencies=tuple(c['frequency'] for c in cats),
            base_classes=tuple(names[i] for i in sorted(self.base_labels)),
            novel_classes=tuple(n for i, n in enumerate(names)
                                if i not in self.base_labels))

        data_list = []
        total_ann_ids = []
        for img_id in self.lvis.get_img_ids():
            raw_img_info = self.lvis.load_imgs([img_id])[0]
            raw_img_info['img_id'] = img_id
            # LVIS v1 names images by their COCO url, e.g.
            # http://images.cocodataset.org/train2017/000000391895.jpg
            raw_img_info['file_name'] = raw_img_info['coco_url'].replace(
                'http://images.cocodataset.org/', '')
            ann_ids = self.lvis.get_ann_ids(img_ids=[img_id])
            raw_ann_info = self.lvis.load_anns(ann_ids)
            total_ann_ids.extend(ann_ids)
            data_list.append(
                self.parse_data_info(
                    dict(raw_ann_info=raw_ann_info,
                         raw_img_info=raw_img_info)))
        if self.ANN_ID_UNIQUE and len(set(total_ann_ids)) != len(
                total_ann_ids):
            raise ValueError(
                f'Annotation ids in {self.ann_file!r} are not unique')
        del self.lvis
        return data_list


@DATASETS.register_module()
class OVCocoDataset(DetAnnotationChecks, NovelAnnotationsDrop, CocoDataset):
    """COCO with the open-vocabulary base/novel split, chosen by name.

    The classes are ``base_classes + novel_classes`` listed in category-id
    order (mmdet's label order); a name that is not a category of the
    annotation file is an error.  In training the novel annotations are
    dropped and, with ``filter_cfg.filter_empty_gt``, images left without
    any base annotation are skipped.  The annotation file is checked when
    the dataset is built (:mod:`icar_dense.datasets.validation`).

    Args:
        base_classes (Sequence[str]): Defaults to OVR-CNN's 48.
        novel_classes (Sequence[str]): Defaults to OVR-CNN's 17.
        drop_novel_annotations (bool, optional): None (default) drops them in
            training (``test_mode=False``) and keeps them in testing.
        **kwargs: The arguments of ``CocoDataset``; ``metainfo.classes``
            defaults to the base and novel classes in category-id order.
    """

    def __init__(self,
                 *args,
                 base_classes: Sequence[str] = COCO_OVR_BASE_CLASSES,
                 novel_classes: Sequence[str] = COCO_OVR_NOVEL_CLASSES,
                 drop_novel_annotations: Optional[bool] = None,
                 **kwargs) -> None:
        owner = type(self).__name__
        for key, names in (('base_classes', base_classes),
                           ('novel_classes', novel_classes)):
            if isinstance(names, str) or not names:
                raise ValueError(f'{owner}: {key} must be a non-empty list '
                                 f'of class names, got {names!r}')
        both = sorted(set(base_classes) & set(novel_classes))
        if both:
            raise ValueError(f'{owner}: {both} are both base and novel')
        self.base_classes = tuple(base_classes)
        self.novel_classes = tuple(novel_classes)
        self._drop_novel = drop_novel_annotations
        metainfo = dict(kwargs.pop('metainfo', None) or {})
        classes = metainfo.get('classes')
        if classes is None:
            # reordered to category-id order once the file is read
            metainfo['classes'] = self.base_classes + self.novel_classes
            self._order_classes = True
        else:
            extra = [c for c in classes if c not in self.base_classes +
                     self.novel_classes]
            missing = [c for c in self.base_classes + self.novel_classes
                       if c not in classes]
            if extra or missing:
                raise ValueError(
                    f'{owner}: metainfo.classes must be exactly the base and '
                    f'novel classes; not in the split: {extra}, missing: '
                    f'{missing} (to test on another class list: '
                    'tools/test.py CONFIG CKPT --vocabulary ...)')
            self._order_classes = False
        super().__init__(*args, metainfo=metainfo, **kwargs)

    @property
    def drop_novel_annotations(self) -> bool:
        return (not self.test_mode
                if self._drop_novel is None else self._drop_novel)

    def COCOAPI(self, ann_file: str) -> COCO:
        """Open the annotation file and check the split against it.

        ``CocoDataset.load_data_list`` creates its COCO API through this
        attribute; as a method it lets the split be checked against the
        file's categories before any image is parsed.
        """
        coco = self.open_coco(ann_file)  # checked, then indexed
        # mmdet labels categories in the order of the file's list
        rank = {c['name']: i for i, c in enumerate(coco.load_cats(
            coco.get_cat_ids()))}
        for key in ('base_classes', 'novel_classes'):
            missing = [n for n in getattr(self, key) if n not in rank]
            if missing:
                raise ValueError(
                    f'{type(self).__name__}: {key} {missing} are not '
                    f'categories of {self.ann_file}')
        id_order = tuple(
            sorted(self._metainfo['classes'], key=lambda n: rank[n]))
        if self._order_classes:
            self._metainfo['classes'] = id_order
        elif tuple(self._metainfo['classes']) != id_order:
            raise ValueError(
                f'{type(self).__name__}: metainfo.classes must be listed in '
                f'the category order of {self.ann_file} (the label order '
                f'of mmdet and its CocoMetric): {list(id_order)}')
        classes = self._metainfo['classes']
        self.base_labels = {
            i for i, n in enumerate(classes) if n in self.base_classes
        }
        self._metainfo.update(
            base_classes=tuple(n for n in classes if n in self.base_classes),
            novel_classes=tuple(n for n in classes
                                if n in self.novel_classes))
        return coco

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if self.test_mode or not (self.filter_cfg or {}).get(
                'filter_empty_gt', False):
            return data_list
        return [
            info for info in data_list
            if any(not inst['ignore_flag'] for inst in info['instances'])
        ]

"""Cheap checks of dataset files, run when a dataset is built.

A wrong annotation file must fail before any inference, with a message that
names the file, the record and the field, instead of being merged, dropped
or scored without a word (or failing deep inside pycocotools / the LVIS
evaluator after the whole test set ran).  One layer per kind of input:

* **COCO / LVIS json** (:func:`check_detection_annotations`, run by
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
import math
from operator import itemgetter
from typing import Any, Dict, List, Optional, Sequence

from lvis import LVIS
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS as DET_DATASETS
from mmengine.logging import print_log

__all__ = [
    'AnnotationError', 'check_detection_annotations', 'read_json',
    'check_video_labels', 'pipeline_loads_masks', 'DetAnnotationChecks',
    'LVIS_EVAL_IMAGE_FIELDS', 'ValidatedCocoDataset'
]

# per-image fields that lvis.LVISEval reads (mmdet's LVISMetric)
LVIS_EVAL_IMAGE_FIELDS = ('neg_category_ids', 'not_exhaustive_category_ids')
_SHOW = 5  # records quoted in a message


class AnnotationError(ValueError):
    """An annotation file that cannot be right.

    Attributes:
        path (str): The file.
        record (str, optional): The record at fault, e.g. ``'images[3]'``.
        field (str, optional): The field at fault, e.g. ``'width'``.
    """

    def __init__(self, message: str, path: Optional[str] = None,
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


# ----------------------------------------------------------------------------
# COCO / LVIS
# ----------------------------------------------------------------------------
def _describe(record: Any) -> str:
    if isinstance(record, dict) and 'id' in record:
        return f' (id {record["id"]!r})'
    return ''


class _Table:
    """One list of a COCO json (``images``, ``annotations``, ...)."""

    def __init__(self, records: list, kind: str, path: str) -> None:
        self.records, self.kind, self.path = records, kind, path

    def name(self, index: int) -> str:
        return f'{self.kind}[{index}]{_describe(self.records[index])}'

    def fail(self, index: int, what: str, field: Optional[str] = None,
             others: int = 0, note: str = '') -> None:
        more = (f' ({others} more {self.kind} entries have the same problem)'
                if others else '')
        raise AnnotationError(
            f'{self.path}: {self.name(index)} {what}{more}{note}', self.path,
            f'{self.kind}[{index}]', field)

    def column(self, key: str, why: str = '') -> list:
        """Every record's ``key``; a clear error for a record without it."""
        try:
            return list(map(itemgetter(key), self.records))
        except (KeyError, TypeError, IndexError):
            pass
        for i, record in enumerate(self.records):
            if not isinstance(record, dict):
                raise AnnotationError(
                    f'{self.path}: {self.kind}[{i}] is a '
                    f'{type(record).__name__}, not an object', self.path,
                    f'{self.kind}[{i}]')
        bad = [i for i, r in enumerate(self.records) if key not in r]
        self.fail(bad[0], f"has no '{key}' field", key, len(bad) - 1,
                  f'; {why}' if why else '')
        raise AssertionError('unreachable')

    def unique(self, values: list, key: str = 'id') -> None:
        try:
            if len(set(values)) == len(values):
                return
        except TypeError:
            bad = next(i for i, v in enumerate(values)
                       if not isinstance(v, (int, str)))
            self.fail(bad, f"has an '{key}' of type "
                      f'{type(values[bad]).__name__} (expected a number)',
                      key)
        first: Dict[Any, int] = {}
        dups = []
        for i, value in enumerate(values):
            if value in first:
                dups.append((first[value], i, value))
            else:
                first[value] = i
        j, i, value = dups[0]
        more = (f' ({len(dups)} duplicated {key}s in {self.kind})'
                if len(dups) > 1 else '')
        hint = {
            'images': 'pycocotools would merge them into one image',
            'annotations': 'one would replace the other',
            'categories': 'their labels would be confused',
        }.get(self.kind, 'they must be unique')
        raise AnnotationError(
            f'{self.path}: {self.kind}[{j}] and {self.kind}[{i}] have the '
            f"same '{key}' {value!r}{more}: {hint}", self.path,
            f'{self.kind}[{i}]', key)

    def numbers(self, values: list, key: str, positive: bool) -> None:
        """Every value a finite number (> 0 with ``positive``)."""
        try:
            if math.isfinite(sum(values)) and (not positive or not values
                                               or min(values) > 0):
                return
        except TypeError:
            pass

        def ok(v):
            return (isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) and (v > 0 or not positive))

        bad = [i for i, v in enumerate(values) if not ok(v)]
        want = 'a positive number' if positive else 'a finite number'
        self.fail(bad[0], f"has '{key}' {values[bad[0]]!r} (expected {want})",
                  key, len(bad) - 1)


def _unknown_refs(table: _Table, refs: list, known: set, key: str,
                  target: str) -> None:
    try:
        unknown = set(refs) - known
    except TypeError:  # an unhashable reference
        unknown = {None}
    if not unknown:
        return
    bad = [i for i, ref in enumerate(refs)
           if not isinstance(ref, (int, str)) or ref not in known]
    i = bad[0]
    shown = sorted(map(str, known))[:10]
    table.fail(
        i, f"has {key} {refs[i]!r}, which is not the id of any entry of "
        f"'{target}'", key, len(bad) - 1,
        f" ('{target}' ids: {', '.join(shown)}"
        f"{', ...' if len(known) > 10 else ''})")


def _finite_sum(values) -> bool:
    """Whether numbers sum to a finite value (False for NaN / inf, for a
    non-number, or a missing key); one C-level pass."""
    try:
        return math.isfinite(sum(values))
    except (KeyError, TypeError, IndexError):
        return False


def _good_box(box: Any) -> bool:
    return (isinstance(box, (list, tuple)) and len(box) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v) for v in box))


def _check_header(data: Any, path: str, lvis: bool,
                  eval_fields: Sequence[str], need_file_name: bool
                  ) -> tuple:
    """Top level, ``categories`` and ``images`` (small lists): every
    check.  Returns the three tables."""
    if not isinstance(data, dict):
        raise AnnotationError(
            f'{path}: not a COCO/LVIS annotation file: the top level is a '
            f'{type(data).__name__}, expected an object with "images", '
            '"annotations" and "categories"', path)
    for key in ('images', 'categories'):
        if not isinstance(data.get(key), list):
            raise AnnotationError(
                f'{path}: not a COCO/LVIS annotation file: no "{key}" list',
                path, None, key)
    # image-info files (e.g. COCO test-dev) have no annotations at all
    anns = data.get('annotations', [])
    if not isinstance(anns, list):
        raise AnnotationError(f'{path}: "annotations" must be a list', path,
                              None, 'annotations')

    cats = _Table(data['categories'], 'categories', path)
    cats.unique(cats.column('id'))
    cats.column('name')

    images = _Table(data['images'], 'images', path)
    images.unique(images.column('id'))
    size_why = 'mmdet reads the image size from it'
    images.numbers(images.column('width', size_why), 'width', True)
    images.numbers(images.column('height', size_why), 'height', True)
    if need_file_name:
        if lvis:
            images.column('coco_url', 'LVIS v1 names image files by it')
        else:
            images.column('file_name')
    for key in eval_fields:
        values = images.column(
            key, 'LVIS AP (LVISMetric) reads it for every image')
        bad = [i for i, v in enumerate(values) if not isinstance(v, list)]
        if bad:
            images.fail(bad[0], f"has '{key}' {values[bad[0]]!r} (expected "
                        'a list of category ids)', key, len(bad) - 1)
    return cats, images, _Table(anns, 'annotations', path)


def _check_masks(table: _Table) -> None:
    """A non-empty ``segmentation`` on every annotation (one C pass)."""
    try:
        if all(map(itemgetter('segmentation'), table.records)):
            return
    except (KeyError, TypeError):
        pass
    segs = table.column(
        'segmentation', 'the pipeline loads masks (LoadAnnotations '
        'with_mask=True)')
    bad = [i for i, seg in enumerate(segs) if not seg]
    table.fail(bad[0], "has an empty 'segmentation' but the pipeline loads "
               'masks (LoadAnnotations with_mask=True)', 'segmentation',
               len(bad) - 1)


def check_detection_annotations(data: Any,
                                path: str,
                                lvis: bool = False,
                                need_masks: bool = False,
                                eval_fields: Sequence[str] = (),
                                need_file_name: bool = True) -> None:
    """Check every record of a parsed COCO / LVIS json; raise
    :class:`AnnotationError` naming the file, the record and the field.

    The datasets run the cheap part of this (``images``, ``categories``,
    masks) on every build and let the COCO / LVIS api and mmdet's parser do
    the per-annotation work they do anyway, comparing counts; this full
    version runs when one of them fails, to name the record.

    Args:
        data: The parsed json.
        path (str): The file, for messages.
        lvis (bool): LVIS v1 layout: images are named by ``coco_url``.
        need_masks (bool): Every annotation needs a non-empty
            ``segmentation`` (the pipeline loads masks).
        eval_fields (Sequence[str]): Per-image fields the metric reads
            (:data:`LVIS_EVAL_IMAGE_FIELDS` for LVIS AP).
        need_file_name (bool): Images need their file name.
    """
    cats, images, table = _check_header(data, path, lvis, eval_fields,
                                        need_file_name)
    anns = table.records
    if not anns:
        return
    table.unique(table.column('id'))
    for key, ids, target in (('image_id', images.column('id'), 'images'),
                             ('category_id', cats.column('id'),
                              'categories')):
        known = set(ids)
        try:
            ok = known.issuperset(map(itemgetter(key), anns))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            _unknown_refs(table, table.column(key), known, key, target)
    bboxes = table.column('bbox')
    try:
        box_ok = set(map(len, bboxes)) == {4}
    except TypeError:
        box_ok = False
    if not (box_ok and _finite_sum(map(sum, bboxes))):
        bad = [i for i, box in enumerate(bboxes) if not _good_box(box)]
        table.fail(bad[0], f"has 'bbox' {bboxes[bad[0]]!r}: expected [x, "
                   'y, width, height] (4 finite numbers)', 'bbox',
                   len(bad) - 1)
    if not _finite_sum(map(itemgetter('area'), anns)):
        table.numbers(
            table.column('area', 'mmdet and the COCO / LVIS metrics read it'),
            'area', False)
    if need_masks:
        _check_masks(table)


def degenerate_reason(ann: dict, width: float, height: float
                      ) -> Optional[str]:
    """Why mmdet's ``CocoDataset.parse_data_info`` drops an annotation's
    box (its exact rule), or None when it keeps it (``ignore`` ones are
    skipped before)."""
    x, y, w, h = ann['bbox']
    inter_w = max(0, min(x + w, width) - max(x, 0))
    inter_h = max(0, min(y + h, height) - max(y, 0))
    if not (inter_w * inter_h == 0 or ann['area'] <= 0 or w < 1 or h < 1):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return 'not_finite'
    if w <= 0 or h <= 0:
        return 'nonpositive'
    if w < 1 or h < 1:
        return 'under_1px'
    if inter_w * inter_h == 0:
        return 'outside'
    return 'zero_area'


_REASONS = (('nonpositive', 'with zero or negative width or height'),
            ('under_1px', 'under 1 px wide or high'),
            ('outside', 'outside their image'),
            ('zero_area', "with 'area' <= 0"),
            ('not_finite', 'with NaN or infinite coordinates'))


def report_degenerate_boxes(stats: Dict[str, Any], path: str,
                            owner: str) -> None:
    """One warning with the counts of the boxes that are not used."""
    if not stats.get('dropped'):
        return
    detail = ', '.join(f'{stats[key]} {what}' for key, what in _REASONS
                       if stats[key])
    record, box = stats['first']
    print_log(
        f'{owner}: {path}: {stats["dropped"]} of {stats["total"]} '
        f'annotations have degenerate boxes and are not used ({detail}); '
        f'first: {record} bbox {box}', logger='current', level=30)


def pipeline_loads_masks(pipeline: Any) -> bool:
    """Whether a built pipeline holds a ``LoadAnnotations(with_mask=True)``
    (also inside wrappers such as ``SafeLoad`` or ``RandomChoice``)."""
    seen = set()

    def walk(node, depth=0):
        if node is None or depth > 6 or id(node) in seen:
            return False
        seen.add(id(node))
        if isinstance(node, (list, tuple)):
            return any(walk(t, depth + 1) for t in node)
        if getattr(node, 'with_mask', False) is True:
            return True
        return any(
            walk(getattr(node, attr, None), depth + 1)
            for attr in ('transforms', 'subroutines'))

    return walk(pipeline)


class DetAnnotationChecks:
    """Mixin of the detection datasets (before the mmdet class in the
    bases): the annotation file is checked while the dataset is built.

    * before the COCO / LVIS api indexes the parsed json: the top level,
      ``categories`` and ``images`` in full (ids, sizes, file names, the
      per-image fields of LVIS AP on test sets), and ``segmentation`` when
      the pipeline loads masks;
    * the per-annotation checks ride on the work the api and mmdet do
      anyway: duplicate ids show as fewer indexed records than listed,
      annotations of unknown images as fewer parsed than listed, unknown
      categories and degenerate boxes as images that lost annotations (only
      those are looked at).  Any failure of the api or of mmdet's parser
      runs :func:`check_detection_annotations` to name the record.

    Boxes that mmdet drops are reported in one warning and counted in
    ``self.degenerate_boxes``.
    """

    #: True for LVIS v1 files (images named by ``coco_url``)
    lvis_format = False

    def eval_image_fields(self) -> Sequence[str]:
        """Per-image fields the metric of this dataset reads (LVIS test
        sets: :data:`LVIS_EVAL_IMAGE_FIELDS`)."""
        return LVIS_EVAL_IMAGE_FIELDS if (self.lvis_format
                                          and self.test_mode) else ()

    def _check_options(self) -> dict:
        return dict(
            lvis=self.lvis_format,
            need_masks=pipeline_loads_masks(getattr(self, 'pipeline', None)),
            eval_fields=self.eval_image_fields())

    def check_annotation_data(self, data: Any) -> None:
        """The checks before indexing; keeps ``data`` to diagnose later
        failures while the dataset loads."""
        options = self._check_options()
        cats, _, table = _check_header(data, str(self.ann_file),
                                       options['lvis'],
                                       options['eval_fields'], True)
        if options['need_masks'] and table.records:
            _check_masks(table)
        self._ann_data = data
        self._file_cat_ids = set(cats.column('id'))

    def _diagnose(self, err: BaseException, where: str = '') -> None:
        """Name the record behind a failure of the api / mmdet's parser."""
        data = getattr(self, '_ann_data', None)
        if data is not None:
            check_detection_annotations(data, str(self.ann_file),
                                        **self._check_options())
        raise AnnotationError(
            f'{self.ann_file}: {where or "the file"} cannot be parsed: '
            f'{type(err).__name__}: {err}', str(self.ann_file)) from err

    def _check_counts(self, api) -> None:
        """Duplicate ids: the api indexed fewer records than listed."""
        data = self._ann_data
        for kind, indexed in (('images', api.imgs), ('categories',
                                                     api.cats),
                              ('annotations', api.anns)):
            records = data.get(kind) or []
            if len(indexed) != len(records):
                table = _Table(records, kind, str(self.ann_file))
                table.unique(table.column('id'))

    def open_coco(self, local_path: str):
        """mmdet's COCO api on a checked file."""
        from mmdet.datasets.api_wrappers import COCO
        data = read_json(local_path, str(self.ann_file))
        self.check_annotation_data(data)
        coco = COCO()  # no file: nothing is loaded or printed
        coco.dataset = data
        try:
            coco.createIndex()
        except (KeyError, TypeError) as err:
            self._diagnose(err)
        # what mmdet's wrapper aliases after loading a file
        coco.img_ann_map = coco.imgToAnns
        coco.cat_img_map = coco.catToImgs
        self._check_counts(coco)
        return coco

    def open_lvis(self, local_path: str):
        """The ``lvis`` api on a checked file."""
        return _CheckedLVIS(local_path, self)

    def full_init(self) -> None:
        if getattr(self, '_fully_initialized', False):
            return
        self.degenerate_boxes = dict(
            total=0, dropped=0, first=None, **{k: 0 for k, _ in _REASONS})
        self._parsed_annotations = 0
        try:
            super().full_init()
            data = getattr(self, '_ann_data', None)
            if data is not None:
                listed = len(data.get('annotations') or [])
                self.degenerate_boxes['total'] = listed
                if self._parsed_annotations < listed:
                    # annotations whose image_id is no image were skipped
                    self._diagnose(RuntimeError(
                        f'{listed - self._parsed_annotations} annotations '
                        'belong to no image'))
        finally:
            self._ann_data = None
        report_degenerate_boxes(self.degenerate_boxes, str(self.ann_file),
                                type(self).__name__)

    def parse_data_info(self, raw_data_info: dict):
        img = raw_data_info['raw_img_info']
        try:
            info = super().parse_data_info(raw_data_info)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            self._diagnose(err, f'image id {img.get("img_id")!r} or one of '
                           'its annotations')
        anns = raw_data_info['raw_ann_info']
        self._parsed_annotations = getattr(self, '_parsed_annotations',
                                           0) + len(anns)
        if len(info['instances']) < len(anns):
            # some were dropped: ignored, another category, or a bad box
            self._examine_dropped(img, anns)
        return info

    def _examine_dropped(self, img: dict, anns: List[dict]) -> None:
        stats = getattr(self, 'degenerate_boxes', None)
        known = getattr(self, '_file_cat_ids', None)
        for ann in anns:
            if known is not None and ann['category_id'] not in known:
                # mmdet would drop it as "another class": name it
                self._diagnose(KeyError(ann['category_id']),
                               f'annotation id {ann.get("id")!r}')
            if stats is None or ann.get('ignore', False):
                continue
            reason = degenerate_reason(ann, img['width'], img['height'])
            if reason is not None:
                stats[reason] += 1
                stats['dropped'] += 1
                if stats['first'] is None:
                    stats['first'] = (
                        f'annotation id {ann.get("id")!r} of image id '
                        f'{img.get("img_id")!r}', ann['bbox'])


class _CheckedLVIS(LVIS):
    """``lvis.LVIS`` that checks the parsed json before indexing it."""

    def __init__(self, path: str, dataset: DetAnnotationChecks) -> None:
        self._dataset = dataset
        try:
            super().__init__(path)
            dataset._check_counts(self)
        finally:
            del self._dataset  # no reference to the dataset is kept

    def _load_json(self, path: str) -> Any:
        data = read_json(path, str(self._dataset.ann_file))
        self._dataset.check_annotation_data(data)
        return data

    def _create_index(self) -> None:
        try:
            super()._create_index()
        except (KeyError, TypeError) as err:
            self._dataset._diagnose(err)


@DET_DATASETS.register_module()
class ValidatedCocoDataset(DetAnnotationChecks, CocoDataset):
    """mmdet's ``CocoDataset`` whose annotation file is checked when the
    dataset is built (:func:`check_detection_annotations`)."""

    def COCOAPI(self, ann_file: str):  # noqa: N802 (mmdet's name)
        return self.open_coco(ann_file)


# ----------------------------------------------------------------------------
# video lists
# ----------------------------------------------------------------------------
def check_video_labels(data_list: List[dict], ann_file: str,
                       num_classes: int, classes: str = 'the class list'
                       ) -> None:
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


def __getattr__(name):
    # moved to video_validation (mmaction2): importing this module must not
    # import mmaction2 for a detection run
    if name == 'ValidatedVideoDataset':
        from .video_validation import ValidatedVideoDataset
        return ValidatedVideoDataset
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

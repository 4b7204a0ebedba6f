"""Checks of a parsed COCO / LVIS json (no mmdet, no lvis-api import).

What a wrong annotation file gets refused for, record by record, before the
COCO / LVIS api indexes it; :mod:`.det_validation` runs these checks from the
detection datasets (see :mod:`.validation` for every kind of input).
"""
import math
from operator import itemgetter
from typing import Any, Dict, Optional, Sequence

from mmengine.logging import print_log

from .validation import AnnotationError

__all__ = [
    'LVIS_EVAL_IMAGE_FIELDS', 'check_detection_annotations',
    'degenerate_reason', 'pipeline_loads_masks', 'report_degenerate_boxes'
]

# per-image fields that lvis.LVISEval reads (mmdet's LVISMetric)
LVIS_EVAL_IMAGE_FIELDS = ('neg_category_ids', 'not_exhaustive_category_ids')
_SHOW = 5  # records quoted in a message


def _describe(record: Any) -> str:
    if isinstance(record, dict) and 'id' in record:
        return f' (id {record["id"]!r})'
    return ''


class RecordTable:
    """One list of a COCO json (``images``, ``annotations``, ...)."""

    def __init__(self, records: list, kind: str, path: str) -> None:
        self.records, self.kind, self.path = records, kind, path

    def name(self, index: int) -> str:
        return f'{self.kind}[{index}]{_describe(self.records[index])}'

    def fail(self,
             index: int,
             what: str,
             field: Optional[str] = None,
             others: int = 0,
             note: str = '') -> None:
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
        self.fail(bad[0], f"has no '{key}' field", key,
                  len(bad) - 1, f'; {why}' if why else '')
        raise AssertionError('unreachable')

    def unique(self, values: list, key: str = 'id') -> None:
        try:
            if len(set(values)) == len(values):
                return
        except TypeError:
            bad = next(i for i, v in enumerate(values)
                       if not isinstance(v, (int, str)))
            self.fail(
                bad, f"has an '{key}' of type "
                f'{type(values[bad]).__name__} (expected a number)', key)
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
                  key,
                  len(bad) - 1)


def _unknown_refs(table: RecordTable, refs: list, known: set, key: str,
                  target: str) -> None:
    try:
        unknown = set(refs) - known
    except TypeError:  # an unhashable reference
        unknown = {None}
    if not unknown:
        return
    bad = [
        i for i, ref in enumerate(refs)
        if not isinstance(ref, (int, str)) or ref not in known
    ]
    i = bad[0]
    shown = sorted(map(str, known))[:10]
    table.fail(
        i, f"has {key} {refs[i]!r}, which is not the id of any entry of "
        f"'{target}'", key,
        len(bad) - 1, f" ('{target}' ids: {', '.join(shown)}"
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
        isinstance(v, (int,
                       float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in box))


def check_header(data: Any, path: str, lvis: bool, eval_fields: Sequence[str],
                 need_file_name: bool) -> tuple:
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

    cats = RecordTable(data['categories'], 'categories', path)
    cats.unique(cats.column('id'))
    cats.column('name')

    images = RecordTable(data['images'], 'images', path)
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
            images.fail(
                bad[0], f"has '{key}' {values[bad[0]]!r} (expected "
                'a list of category ids)', key,
                len(bad) - 1)
    return cats, images, RecordTable(anns, 'annotations', path)


def check_masks(table: RecordTable) -> None:
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
    table.fail(
        bad[0], "has an empty 'segmentation' but the pipeline loads "
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
    cats, images, table = check_header(data, path, lvis, eval_fields,
                                       need_file_name)
    anns = table.records
    if not anns:
        return
    table.unique(table.column('id'))
    for key, ids, target in (('image_id', images.column('id'), 'images'),
                             ('category_id', cats.column('id'), 'categories')):
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
        table.fail(
            bad[0], f"has 'bbox' {bboxes[bad[0]]!r}: expected [x, "
            'y, width, height] (4 finite numbers)', 'bbox',
            len(bad) - 1)
    if not _finite_sum(map(itemgetter('area'), anns)):
        table.numbers(
            table.column('area', 'mmdet and the COCO / LVIS metrics read it'),
            'area', False)
    if need_masks:
        check_masks(table)


def degenerate_reason(ann: dict, width: float, height: float) -> Optional[str]:
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


DEGENERATE_REASONS = (('nonpositive', 'with zero or negative width or height'),
                      ('under_1px', 'under 1 px wide or high'),
                      ('outside', 'outside their image'), ('zero_area',
                                                           "with 'area' <= 0"),
                      ('not_finite', 'with NaN or infinite coordinates'))


def report_degenerate_boxes(stats: Dict[str, Any], path: str,
                            owner: str) -> None:
    """One warning with the counts of the boxes that are not used."""
    if not stats.get('dropped'):
        return
    detail = ', '.join(f'{stats[key]} {what}'
                       for key, what in DEGENERATE_REASONS if stats[key])
    record, box = stats['first']
    print_log(
        f'{owner}: {path}: {stats["dropped"]} of {stats["total"]} '
        f'annotations have degenerate boxes and are not used ({detail}); '
        f'first: {record} bbox {box}',
        logger='current',
        level=30)


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

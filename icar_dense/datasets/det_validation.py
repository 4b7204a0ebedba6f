"""The detection datasets' annotation checks (mmdet / lvis-api side).

:class:`DetAnnotationChecks` runs :mod:`.coco_checks` while a COCO / LVIS
dataset is built: on the parsed json before the api indexes it, and on the
records mmdet parses anyway.
"""
from typing import Any, List, Sequence

from lvis import LVIS
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS as DET_DATASETS

from .coco_checks import (DEGENERATE_REASONS, LVIS_EVAL_IMAGE_FIELDS,
                          RecordTable, check_detection_annotations,
                          check_header, check_masks, degenerate_reason,
                          pipeline_loads_masks, report_degenerate_boxes)
from .validation import AnnotationError, read_json

__all__ = ['DetAnnotationChecks', 'ValidatedCocoDataset']


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
        cats, _, table = check_header(data, str(self.ann_file),
                                      options['lvis'], options['eval_fields'],
                                      True)
        if options['need_masks'] and table.records:
            check_masks(table)
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
        for kind, indexed in (('images', api.imgs), ('categories', api.cats),
                              ('annotations', api.anns)):
            records = data.get(kind) or []
            if len(indexed) != len(records):
                table = RecordTable(records, kind, str(self.ann_file))
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
            total=0,
            dropped=0,
            first=None,
            **{
                k: 0
                for k, _ in DEGENERATE_REASONS
            })
        self._parsed_annotations = 0
        try:
            super().full_init()
            data = getattr(self, '_ann_data', None)
            if data is not None:
                listed = len(data.get('annotations') or [])
                self.degenerate_boxes['total'] = listed
                if self._parsed_annotations < listed:
                    # annotations whose image_id is no image were skipped
                    self._diagnose(
                        RuntimeError(
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
            self._diagnose(
                err, f'image id {img.get("img_id")!r} or one of '
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
                self._diagnose(
                    KeyError(ann['category_id']),
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

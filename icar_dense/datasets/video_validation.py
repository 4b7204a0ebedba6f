"""``ValidatedVideoDataset``: mmaction2's ``VideoDataset`` with its labels
checked when it is built (see :mod:`icar_dense.datasets.validation`)."""
from typing import List

from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS as ACTION_DATASETS

from .validation import AnnotationError, check_video_labels

__all__ = ['ValidatedVideoDataset']


@ACTION_DATASETS.register_module()
class ValidatedVideoDataset(VideoDataset):
    """mmaction's ``VideoDataset`` whose labels are checked against the
    class list when the dataset is built: ``metainfo.classes`` when given
    (e.g. by ``tools/test.py --vocabulary``), else ``num_classes`` (a
    ``VideoDataset`` argument); with neither, labels are not checked.  A
    label outside the list names the list file and line.
    """

    def load_data_list(self) -> List[dict]:
        try:
            data_list = super().load_data_list()
        except ValueError as err:
            raise AnnotationError(
                f'{self.ann_file}: every line must be "VIDEO_PATH LABEL" '
                f'(integer labels, no spaces in the path): {err}',
                str(self.ann_file)) from err
        classes = self._metainfo.get('classes')
        if classes:
            check_video_labels(data_list, self.ann_file, len(classes),
                               'metainfo.classes')
        elif self.num_classes is not None:
            check_video_labels(data_list, self.ann_file, self.num_classes,
                               f'num_classes={self.num_classes}')
        return data_list

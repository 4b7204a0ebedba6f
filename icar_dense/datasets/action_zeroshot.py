"""Video lists whose labels are named by a class list (zero-shot testing).

``ZeroShotVideoDataset`` is mmaction2's ``VideoDataset`` (the
``path label`` list format of Kinetics / UCF101 / HMDB51, decoded by the
pipeline) plus a class list naming the labels of the annotation file, and
optionally a subset of those classes to test on.  Videos of other classes
are dropped and the labels re-indexed in the order of the subset, which is
also the vocabulary the text classifier is given.  Examples:

* UCF101 split 2: ``ann_file='ucf101_val_split_2_videos.txt'``,
  ``label_names='ucf101_classnames.txt'`` (101 readable names in label
  order), no subset;
* Kinetics-600 novel-class split 1: ``ann_file=
  'kinetics600_val_list_videos.txt'`` (labels 0..599),
  ``label_names='kinetics600_classnames.txt'``, ``classes=
  'k600_novel_split1.txt'`` (the 160 names of that split).

Class lists are read by :func:`icar_dense.models.text.load_vocabulary`
(``.txt`` one name per line with optional ``name: description``, ``.json``,
a dataset name such as ``'kinetics400'``, or a list), so descriptions in the
file reach the prompts.
"""
from typing import List, Optional, Sequence, Union

from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS

from icar_dense.models.text import Vocabulary, load_vocabulary, readable_name


def _key(name: str) -> str:
    return readable_name(name).lower()


@DATASETS.register_module()
class ZeroShotVideoDataset(VideoDataset):
    """``VideoDataset`` with named labels and an optional class subset.

    Args:
        ann_file (str): ``path label`` list (mmaction video list format).
        pipeline (list[dict]): Data pipeline.
        label_names (str | list[str]): Names of the labels of ``ann_file``,
            label ``i`` being name ``i``: a ``.txt``/``.json`` file, a
            dataset name or a list.
        classes (str | list[str], optional): Subset of ``label_names`` to
            test on (file or list), matched by name (case and ``_`` vs space
            ignored).  None keeps all classes.
        descriptions (bool | str | dict): Passed to ``load_vocabulary``.
            Defaults to True.
        **kwargs: ``VideoDataset`` arguments (``data_prefix``,
            ``test_mode``, ...).
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: list,
                 label_names: Union[str, Sequence[str]],
                 classes: Optional[Union[str, Sequence[str]]] = None,
                 descriptions: Union[bool, str, dict] = True,
                 **kwargs) -> None:
        if kwargs.get('multi_class'):
            raise ValueError('ZeroShotVideoDataset: multi_class lists are '
                             'not supported (one label per video)')
        self.full_vocabulary = load_vocabulary(label_names, descriptions)
        self.vocabulary = self._select(self.full_vocabulary, classes)
        index = {_key(n): i for i, n in enumerate(self.full_vocabulary.names)}
        self._new_label = {
            index[_key(n)]: i
            for i, n in enumerate(self.vocabulary.names)
        }
        metainfo = dict(kwargs.pop('metainfo', None) or {})
        metainfo['classes'] = tuple(self.vocabulary.names)
        super().__init__(ann_file, pipeline, metainfo=metainfo, **kwargs)

    @staticmethod
    def _select(full: Vocabulary, classes) -> Vocabulary:
        if classes is None:
            return full
        wanted = load_vocabulary(classes, descriptions=False).names
        index = {_key(n): i for i, n in enumerate(full.names)}
        unknown = [n for n in wanted if _key(n) not in index]
        if unknown:
            raise ValueError(
                f'ZeroShotVideoDataset: {len(unknown)} classes of {classes!r} '
                f'are not in label_names ({full.source}): {unknown[:10]}')
        rows = [index[_key(n)] for n in wanted]
        return Vocabulary([full.names[r] for r in rows],
                          [list(full.descriptions[r]) for r in rows],
                          f'{full.source} (subset {classes!r})' if isinstance(
                              classes, str) else full.source)

    def load_data_list(self) -> List[dict]:
        try:
            data_list = super().load_data_list()
        except ValueError as err:
            # mmaction splits each line on whitespace and int()s the label
            raise ValueError(
                f'{self.ann_file}: every line must be "VIDEO_PATH LABEL" '
                f'(an integer label, no spaces in the path): {err}') from err
        num_labels = len(self.full_vocabulary)
        kept = []
        for item in data_list:
            label = item['label']
            if label == -1:
                # mmaction's placeholder for a line without a label
                raise ValueError(f'{self.ann_file}: video {item["filename"]} '
                                 'has no label (expected "VIDEO_PATH LABEL")')
            if not 0 <= label < num_labels:
                raise ValueError(
                    f'{self.ann_file}: video {item["filename"]} has label '
                    f'{label}, but label_names ({self.full_vocabulary.source})'
                    f' names only {num_labels} classes')
            if label in self._new_label:
                kept.append(dict(item, label=self._new_label[label]))
        if not kept:
            raise ValueError(f'{self.ann_file}: no video belongs to the '
                             f'{len(self.vocabulary)} selected classes '
                             f'({self.vocabulary.source})')
        return kept

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
  'k600_novel_split1.txt'`` (the 160 names of that split);
* Kinetics-600 novel classes as the iCAR authors evaluate them (one test
  over every Kinetics-600 class that is not a Kinetics-400 class):
  ``label_names='kinetics600_classnames.txt'``,
  ``exclude_classes='kinetics400'`` -- the subset is computed here from the
  two class lists (:func:`novel_classes`), never typed by hand.

Class lists are read by :func:`icar_dense.models.text.load_vocabulary`
(``.txt`` one name per line with optional ``name: description``, ``.json``,
a dataset name such as ``'kinetics400'``, or a list), so descriptions in the
file reach the prompts.
"""
from typing import List, Optional, Sequence, Union

from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS
from mmengine.logging import print_log

from icar_dense.models.text import Vocabulary, load_vocabulary, readable_name
from .validation import check_video_labels


def _key(name: str) -> str:
    return readable_name(name).lower()


def novel_classes(names: Sequence[str],
                  seen: Sequence[str],
                  ignore_case: bool = False) -> List[str]:
    """The classes of ``names`` that are not in ``seen``, in ``names`` order.

    Names are compared after :func:`readable_name` (``_`` and spaces alike);
    case counts unless ``ignore_case``.  Case-sensitive is the iCAR authors'
    Kinetics-600-novel list (a plain set difference of the official names:
    232 classes), which keeps ``"passing american football (not in game)"``
    because Kinetics-400 capitalises ``American``; ``ignore_case=True``
    counts it as seen (231 classes).  Seen names missing from ``names``
    (Kinetics-400 classes renamed or split in Kinetics-600, e.g. ``"dying
    hair"`` -> ``"dyeing hair"``) exclude nothing.

    Args:
        names (list[str]): All classes of the target dataset.
        seen (list[str]): Classes to leave out (e.g. Kinetics-400's).
        ignore_case (bool): Compare names case-insensitively.
            Defaults to False.

    Returns:
        list[str]: The novel names, spelled as in ``names``.
    """

    def key(name: str) -> str:
        name = readable_name(name)
        return name.lower() if ignore_case else name

    excluded = {key(n) for n in seen}
    return [n for n in names if key(n) not in excluded]


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
        exclude_classes (str | list[str], optional): Classes to leave out
            (file, list or dataset vocabulary such as ``'kinetics400'``),
            applied after ``classes``: the rest is tested, in label order
            (:func:`novel_classes`).  Names of it that are not classes of
            the list are ignored (a seen class may be absent from the
            target dataset).  None leaves nothing out.
        exclude_ignore_case (bool): Match ``exclude_classes`` ignoring case.
            Defaults to False, the iCAR authors' set difference.
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
                 exclude_classes: Optional[Union[str, Sequence[str]]] = None,
                 exclude_ignore_case: bool = False,
                 **kwargs) -> None:
        if kwargs.get('multi_class'):
            raise ValueError('ZeroShotVideoDataset: multi_class lists are '
                             'not supported (one label per video)')
        self.full_vocabulary = load_vocabulary(label_names, descriptions)
        self.vocabulary = self._select(self.full_vocabulary, classes)
        if exclude_classes is not None:
            self.vocabulary = self._exclude(self.vocabulary, exclude_classes,
                                            exclude_ignore_case)
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

    @staticmethod
    def _exclude(vocab: Vocabulary, exclude_classes,
                 ignore_case: bool) -> Vocabulary:
        seen = load_vocabulary(exclude_classes, descriptions=False).names
        kept = novel_classes(vocab.names, seen, ignore_case)
        if not kept:
            raise ValueError(
                f'ZeroShotVideoDataset: every class of {vocab.source} is in '
                f'exclude_classes ({exclude_classes!r}): nothing to test')
        rows = {n: i for i, n in enumerate(vocab.names)}
        where = (exclude_classes
                 if isinstance(exclude_classes, str) else 'a list')
        print_log(
            f'ZeroShotVideoDataset: {len(kept)} of the {len(vocab)} classes '
            f'of {vocab.source} are not in {where} ({len(seen)} classes, '
            f'{len(vocab) - len(kept)} of them found and left out'
            f'{", case ignored" if ignore_case else ""})',
            logger='current')
        return Vocabulary(kept,
                          [list(vocab.descriptions[rows[n]]) for n in kept],
                          f'{vocab.source} (without {where})')

    def load_data_list(self) -> List[dict]:
        try:
            data_list = super().load_data_list()
        except ValueError as err:
            # mmaction splits each line on whitespace and int()s the label
            raise ValueError(
                f'{self.ann_file}: every line must be "VIDEO_PATH LABEL" '
                f'(an integer label, no spaces in the path): {err}') from err
        num_labels = len(self.full_vocabulary)
        # labels outside label_names: an error naming the list's line
        check_video_labels(data_list, self.ann_file, num_labels,
                           f'label_names ({self.full_vocabulary.source})')
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

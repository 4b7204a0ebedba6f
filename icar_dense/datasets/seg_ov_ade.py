"""ADE20K with a seen/unseen class split for open-vocabulary segmentation.

The training set of the open-vocabulary protocol keeps the images of all
classes but must not teach the model anything about the *unseen* ones: their
pixels become ``ignore_index`` (255), exactly like the "other" pixels of
ADE20K.  The test set is the plain 150-class ``ADE20KDataset``.

This is a dataset option rather than a pipeline transform because the dataset
is what knows its class list (``metainfo.classes``, possibly a subset of the
150 names) and therefore how class *names* map to label ids; the mapping rides
on mmseg's own ``label_map`` mechanism (applied by ``LoadAnnotations`` after
``reduce_zero_label``), so every stock transform keeps working.
"""
from typing import Dict, Optional, Sequence

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS


def resolve_class_names(names: Sequence[str], classes: Sequence[str],
                        owner: str, key: str = 'unseen_classes') -> list:
    """Indices of ``names`` in ``classes``; a clear error for unknown names."""
    if isinstance(names, str):
        raise TypeError(f'{owner}: {key} must be a list of class names, got '
                        f'the string {names!r}')
    classes = list(classes)
    missing = [n for n in names if n not in classes]
    if missing:
        raise ValueError(
            f'{owner}: {key} {missing} are not among the {len(classes)} '
            f'classes ({", ".join(classes[:8])}'
            f'{", ..." if len(classes) > 8 else ""})')
    dups = sorted({n for n in names if list(names).count(n) > 1})
    if dups:
        raise ValueError(f'{owner}: {key} lists {dups} more than once')
    return [classes.index(n) for n in names]


@DATASETS.register_module()
class ADE20KSeenDataset(ADE20KDataset):
    """``ADE20KDataset`` whose *unseen* classes are ignored (label 255).

    Args:
        unseen_classes (Sequence[str]): Names (as in ``metainfo.classes``) of
            the classes to hide; their pixels get label 255 so that no loss
            is computed on them.  Label ids of the other classes are
            unchanged, so the model keeps predicting in the full label space.
        **kwargs: The arguments of ``ADE20KDataset`` (``metainfo`` may select
            a subset of the 150 classes as usual).
    """

    def __init__(self, unseen_classes: Sequence[str] = (), **kwargs) -> None:
        # get_label_map() runs inside the base __init__ and needs these
        self.unseen_classes = list(unseen_classes)
        self._class_label_map: Optional[Dict[int, int]] = None
        super().__init__(**kwargs)
        classes = self._metainfo.get('classes')
        self.unseen_ids = resolve_class_names(
            self.unseen_classes, classes, type(self).__name__)
        self._metainfo.update(unseen_classes=tuple(self.unseen_classes))

    def get_label_map(self, new_classes: Optional[Sequence] = None
                      ) -> Optional[Dict[int, int]]:
        """mmseg's class-subset label map, plus unseen -> 255.

        Keys are ids of the stored (zero-reduced) annotation, i.e. indices
        into ``ADE20KDataset.METAINFO['classes']``.
        """
        base = ADE20KDataset.get_label_map(new_classes)
        self._class_label_map = base
        if not self.unseen_classes:
            return base
        all_classes = list(self.METAINFO['classes'])
        current = list(new_classes) if new_classes is not None else \
            all_classes
        resolve_class_names(self.unseen_classes, current,
                            type(self).__name__)
        label_map = dict(base) if base is not None else {}
        for old_id, name in enumerate(all_classes):
            if name in self.unseen_classes:
                label_map[old_id] = 255
        return label_map

    def _update_palette(self) -> list:
        # the palette follows the class list, not the ignored pixels: use the
        # class-subset map only, so that unseen classes keep their colours
        label_map, self.label_map = self.label_map, self._class_label_map
        try:
            return super()._update_palette()
        finally:
            self.label_map = label_map

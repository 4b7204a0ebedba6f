# Copyright (c) icar_dense contributors. All rights reserved.
"""The vocabulary type and the class lists the host libraries ship.

:class:`Vocabulary` is an ordered class list with per-class descriptions;
``DATASET_VOCABULARIES`` names the class lists of mmdet (LVIS v1, COCO),
mmseg (ADE20K) and torchvision (Kinetics-400) that a vocabulary can be
given by name.  Parsing files and combining sources is
:mod:`.vocabulary_files`; the entry point is
:func:`.vocabulary.load_vocabulary`.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

__all__ = ['Vocabulary', 'readable_name', 'DATASET_VOCABULARIES']


@dataclass
class Vocabulary:
    """An ordered class list with optional descriptions.

    Args:
        names (list[str]): Class names as the source spells them (e.g. the
            LVIS name ``'bow_(weapon)'``); index ``i`` is label ``i``.
        descriptions (list[list[str]]): Per class, the descriptions (may be
            empty lists).  Defaults to no descriptions.
        source (str): Where the vocabulary came from, for messages and cache
            metadata.
    """

    names: List[str]
    descriptions: List[List[str]] = field(default_factory=list)
    source: str = 'list'

    def __post_init__(self) -> None:
        if not self.descriptions:
            self.descriptions = [[] for _ in self.names]
        if len(self.descriptions) != len(self.names):
            raise ValueError(
                f'Vocabulary from {self.source}: {len(self.names)} names but '
                f'{len(self.descriptions)} description lists.')

    def __len__(self) -> int:
        return len(self.names)

    @property
    def prompt_names(self) -> List[str]:
        """Names as they are written into prompts (``'bow (weapon)'``)."""
        return [readable_name(name) for name in self.names]

    @property
    def has_descriptions(self) -> bool:
        return any(self.descriptions)

    def subjects(self, use_descriptions: bool = True) -> List[List[str]]:
        """Per class, the phrases that replace ``{}`` in each template.

        A class with descriptions gives one ``"name, description"`` phrase per
        description; a class without gives its readable name.
        """
        subjects = []
        for name, descs in zip(self.prompt_names, self.descriptions):
            if use_descriptions and descs:
                subjects.append([f'{name}, {desc}' for desc in descs])
            else:
                subjects.append([name])
        return subjects

    def without_descriptions(self) -> 'Vocabulary':
        return Vocabulary(list(self.names), [], self.source)


def readable_name(name: str) -> str:
    """Make a dataset class name readable for a text encoder.

    LVIS spells names as identifiers: ``'bow_(weapon)'`` becomes
    ``'bow (weapon)'`` and ``'traffic_light'`` becomes ``'traffic light'``.
    """
    name = name.replace('_', ' ')
    name = re.sub(r'\s+', ' ', name)
    name = re.sub(r'\(\s+', '(', name)
    return name.replace(' )', ')').strip()


# ----------------------------------------------------------------------------
# Class lists shipped by the host libraries
# ----------------------------------------------------------------------------
def _lvis_v1_classes() -> Sequence[str]:
    from mmdet.datasets import LVISV1Dataset
    return LVISV1Dataset.METAINFO['classes']


def _coco_classes() -> Sequence[str]:
    from mmdet.datasets import CocoDataset
    return CocoDataset.METAINFO['classes']


def _ade20k_classes() -> Sequence[str]:
    from mmseg.utils import ade_classes
    return ade_classes()


def _kinetics400_classes() -> Sequence[str]:
    # torchvision keeps the official Kinetics-400 names (with spaces, in the
    # label order of the annotation files) next to its video models.
    from torchvision.models._meta import _KINETICS400_CATEGORIES
    return _KINETICS400_CATEGORIES


DATASET_VOCABULARIES: Dict[str, Callable[[], Sequence[str]]] = {
    'lvis_v1': _lvis_v1_classes,
    'lvis': _lvis_v1_classes,
    'coco': _coco_classes,
    'ade20k': _ade20k_classes,
    'ade': _ade20k_classes,
    'kinetics400': _kinetics400_classes,
    'k400': _kinetics400_classes,
}

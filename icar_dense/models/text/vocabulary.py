# Copyright (c) icar_dense contributors. All rights reserved.
"""Class vocabularies of the text classifier.

A vocabulary is an ordered list of class names (the order is the label order
of the dataset) with, per class, zero or more descriptions such as a WordNet
or LVIS definition.  It can come from a Python list, from the metainfo of a
dataset the host libraries already ship (``'lvis_v1'``, ``'coco'``,
``'ade20k'``, ``'kinetics400'``), from a ``.txt`` file or from a ``.json``
file (including the ``categories`` of a real LVIS / COCO annotation file).

Every parser error names the file and the line or key at fault: a typo in a
1203-line vocabulary file must be findable without a debugger.

Grammar of vocabulary files (anything else is refused, naming the file):

* **encoding**: UTF-8, with or without a byte-order mark (stripped); other
  encodings (UTF-16, Latin-1, cp1252, ...) are refused with the line of the
  first undecodable byte and how to convert the file;
* **.txt**: one class per line, ``name`` or ``name: description`` (split at
  the first ``:``); blank lines and lines starting with ``#`` are skipped;
* **.json**, one of

  - a list of names: ``["cat", "dog"]``;
  - a list of category objects: ``[{"name": "cat", "def": "..."}, ...]``
    (``def`` or ``description``; ``id`` orders them, other keys such as
    ``synonyms`` are ignored);
  - a COCO / LVIS annotation file: its ``categories`` are read;
  - an object mapping name -> description, list of descriptions or null:
    ``{"cat": "a small feline", "dog": ["a canine", "a pet"]}``.

  An object whose keys look like a wrapper or metadata (``names``,
  ``classes``, ``labels``, ``version``, ``info``, ...), whose keys are all
  integers (an ``id -> name`` table) or whose values are numbers (a
  ``name -> label`` table) is not a vocabulary and is refused by name, rather
  than becoming classes called "names" and "version".

Two classes must also stay apart once their prompts are tokenized (see
:mod:`icar_dense.models.text.prompt_check`).

The vocabulary type and the host libraries' class lists are
:mod:`.class_lists`, the parsers :mod:`.vocabulary_files`; this module is the
entry point (:func:`load_vocabulary`).
"""
from typing import Any, Dict, Optional, Sequence, Union

from .class_lists import DATASET_VOCABULARIES, Vocabulary, readable_name
from .vocabulary_files import apply_descriptions, from_mapping, from_source

__all__ = [
    'Vocabulary', 'load_vocabulary', 'readable_name', 'DATASET_VOCABULARIES',
    'check_class_order'
]


def load_vocabulary(
    source: Union[str, Sequence[str], Dict[str, Any], Vocabulary],
    descriptions: Union[bool, str, Dict[str, Any]] = True,
) -> Vocabulary:
    """Load a vocabulary.

    Args:
        source (str | list[str] | dict | Vocabulary): A list of class names;
            a dataset name (``'lvis_v1'``, ``'coco'``, ``'ade20k'``,
            ``'kinetics400'``); a ``.txt`` file (one class per line,
            ``name: description`` allowed, blank lines and ``#`` comments
            skipped); a ``.json`` file (a list of names, an object mapping
            name -> description or list of descriptions, a list of
            ``{name, def, synonyms}`` objects, or an annotation file whose
            ``categories`` are read, LVIS ``def`` being the description); a
            dict mapping name -> description(s) (as in the ``.json``); a
            config dict ``dict(source=..., descriptions=...)`` (recognised by
            its ``source`` key) whose ``descriptions`` overrides the
            argument, and whose optional ``classes`` (the dataset's class
            list) the names must match in order (:func:`check_class_order`;
            ``classes_from`` names where that list comes from in errors);
            or a :class:`Vocabulary`.
        descriptions (bool | str | dict): ``True`` keeps the descriptions of
            the source, ``False`` drops them; a file or a dict mapping name ->
            description(s) attaches descriptions matched by class name (e.g.
            the LVIS ``def`` of an annotation file to ``'lvis_v1'``).
            Defaults to True.

    Returns:
        Vocabulary: Names in label order and per-class descriptions.
    """
    expected, expected_from = None, None
    if isinstance(source, dict) and 'source' not in source:
        source = from_mapping(source, 'dict')
    elif isinstance(source, dict):
        cfg = dict(source)
        descriptions = cfg.pop('descriptions', descriptions)
        source = cfg.pop('source')
        expected = cfg.pop('classes', None)
        expected_from = cfg.pop('classes_from', None)
        if cfg:
            raise ValueError(f'Unknown vocabulary config keys {sorted(cfg)} '
                             '(known: source, descriptions, classes, '
                             'classes_from).')
    vocab = _load(source, descriptions)
    if expected is not None:
        check_class_order(vocab, expected, expected_from)
    return vocab


def check_class_order(vocab: Vocabulary,
                      classes: Sequence[str],
                      classes_from: Optional[str] = None) -> None:
    """Check that ``vocab`` names exactly ``classes``, in the same order.

    Names are compared as :func:`readable_name` spells them, ignoring case.
    The dataset's class list is the source of truth for label order (label
    ``i`` of the annotations is ``classes[i]``); a vocabulary file listing
    the same classes in another order would give every label another
    class's text embedding, so it is refused.

    Raises:
        ValueError: naming the vocabulary, the class list's origin and the
            first position where they differ.
    """
    if isinstance(classes, str):
        classes = [classes]
    where = classes_from or 'the dataset classes'

    def key(name):
        return readable_name(str(name)).lower()

    names = list(vocab.names)
    for i, (got, want) in enumerate(zip(names, classes)):
        if key(got) != key(want):
            raise ValueError(
                f'The vocabulary {vocab.source} does not list the classes '
                f'of {where} in their order: label {i} is {want!r} there but '
                f'{got!r} in {vocab.source}. The dataset classes define the '
                'labels; write the vocabulary in that order (same names).')
    if len(names) != len(classes):
        longer, which = ((names, vocab.source) if len(names) > len(classes)
                         else (list(classes), where))
        raise ValueError(
            f'The vocabulary {vocab.source} has {len(names)} classes but '
            f'{where} has {len(classes)}: {longer[min(len(names), len(classes))]!r} '  # noqa: E501
            f'(label {min(len(names), len(classes))}) is only in {which}.')


def _load(source, descriptions) -> Vocabulary:
    if isinstance(source, Vocabulary):
        vocab = Vocabulary(
            list(source.names), [list(d) for d in source.descriptions],
            source.source)
    else:
        vocab = from_source(source)
    if descriptions is True:
        return vocab
    if descriptions is False or descriptions is None:
        return vocab.without_descriptions()
    return apply_descriptions(vocab, descriptions)


def describe(vocab: Optional[Vocabulary]) -> str:
    """A short description of a vocabulary for log messages."""
    if vocab is None:
        return 'no vocabulary'
    n_desc = sum(bool(d) for d in vocab.descriptions)
    return (f'{len(vocab)} classes from {vocab.source}'
            f'{f", {n_desc} with descriptions" if n_desc else ""}')

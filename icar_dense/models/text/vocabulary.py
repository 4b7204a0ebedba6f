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
"""
import io
import json
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    'Vocabulary', 'load_vocabulary', 'readable_name', 'DATASET_VOCABULARIES',
    'check_class_order'
]


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


# ----------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------
def _check_unique(names: Sequence[str], where: Sequence[str],
                  source: str) -> None:
    """Raise on duplicate names, listing every position of each duplicate."""
    seen: Dict[str, List[str]] = {}
    for name, pos in zip(names, where):
        seen.setdefault(name, []).append(pos)
    dups = {name: pos for name, pos in seen.items() if len(pos) > 1}
    if dups:
        detail = '; '.join(f'{name!r} at {", ".join(pos)}'
                           for name, pos in dups.items())
        raise ValueError(f'Duplicate class names in {source}: {detail}.')


def read_text(path: str) -> str:
    """A vocabulary file's text: UTF-8, a byte-order mark stripped; any
    other encoding is an error naming the file, the line and the fix."""
    with open(path, 'rb') as f:
        raw = f.read()
    for bom, name in ((b'\xff\xfe', 'UTF-16 little-endian'),
                      (b'\xfe\xff', 'UTF-16 big-endian')):
        if raw.startswith(bom):
            raise ValueError(
                f'Vocabulary file {path} is {name} text (it starts with a '
                'UTF-16 byte-order mark); vocabulary files must be UTF-8. '
                f'Convert it, e.g. `iconv -f UTF-16 -t UTF-8 {path} > '
                'classes_utf8.txt`, or save it as "UTF-8" in your editor.')
    try:
        # a byte-order mark inside (files concatenated) is no character of
        # a class name either
        return raw.decode('utf-8-sig').replace('\ufeff', '')
    except UnicodeDecodeError as err:
        line = raw.count(b'\n', 0, err.start) + 1
        raise ValueError(
            f'Vocabulary file {path}, line {line}: not UTF-8 text (byte '
            f'0x{raw[err.start]:02x} at offset {err.start} cannot be '
            'decoded); vocabulary files must be UTF-8. If it was saved as '
            'Latin-1 / Windows-1252, convert it, e.g. `iconv -f CP1252 -t '
            f'UTF-8 {path} > classes_utf8.txt`, or save it as "UTF-8" in '
            'your editor.') from None


def _parse_txt(path: str) -> Vocabulary:
    """One class per line, optionally ``name: description``.

    Blank lines and lines starting with ``#`` are skipped.  A class may not
    repeat; to give a class several descriptions use a ``.json`` file.
    """
    names, descs, lines = [], [], []
    with io.StringIO(read_text(path), newline=None) as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            if ':' in line:
                name, desc = (part.strip() for part in line.split(':', 1))
                if not name or not desc:
                    raise ValueError(
                        f'{path}, line {lineno}: malformed line {line!r}: '
                        'expected "name" or "name: description" with both '
                        'parts non-empty.')
                descs.append([desc])
            else:
                name = line
                descs.append([])
            names.append(name)
            lines.append(f'line {lineno}')
    if not names:
        raise ValueError(f'Vocabulary file {path} defines no class names '
                         '(only blank lines or comments).')
    _check_unique(names, lines, path)
    return Vocabulary(names, descs, path)


def _reject_duplicate_keys(path: str) -> Callable:

    def hook(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        # json.load silently keeps the last of two equal keys, which would
        # drop a class without a word.
        keys = [k for k, _ in pairs]
        _check_unique(keys, [f'key {k!r}' for k in keys], path)
        return dict(pairs)

    return hook


def _as_descriptions(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError(f'{where}: a description must be a string, a list of '
                     f'strings or null, got {type(value).__name__}.')


def _parse_category_list(items: List[Any], path: str, key: str) -> Vocabulary:
    """LVIS / COCO style ``[{"id", "name", "def", "synonyms"}, ...]``
    (``synonyms`` is accepted and not used: prompts name the class)."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f'{path}: {key}[{i}] must be an object with a '
                             f'"name", got {type(item).__name__}.')
        if not isinstance(item.get('name'), str) or not item['name'].strip():
            raise ValueError(f'{path}: {key}[{i}] has no non-empty string '
                             '"name".')
    if all('id' in item for item in items):
        # mmdet assigns labels in category-id order; a json whose list is
        # not sorted by id must still give the same label order.
        order = sorted(range(len(items)), key=lambda i: items[i]['id'])
    else:
        order = list(range(len(items)))
    names, descs, where = [], [], []
    for i in order:
        item = items[i]
        desc = item.get('def', item.get('description'))
        names.append(item['name'].strip())
        descs.append(_as_descriptions(desc, f'{path}: {key}[{i}]'))
        where.append(f'{key}[{i}]')
    _check_unique(names, where, path)
    return Vocabulary(names, descs, path)


def _parse_json(path: str) -> Vocabulary:
    text = read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys(path))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}, line {e.lineno} column {e.colno}: '
                         f'invalid JSON: {e.msg}.') from None
    if isinstance(data, dict) and 'categories' in data:
        if not isinstance(data['categories'], list):
            raise ValueError(f'{path}: "categories" must be a list of '
                             'category objects.')
        vocab = _parse_category_list(data['categories'], path, 'categories')
    elif isinstance(data, list):
        if all(isinstance(item, str) for item in data):
            for i, name in enumerate(data):
                if not name.strip():
                    raise ValueError(f'{path}: [{i}] is an empty name.')
            names = [name.strip() for name in data]
            _check_unique(names, [f'[{i}]' for i in range(len(data))], path)
            vocab = Vocabulary(names, [], path)
        elif all(isinstance(item, dict) for item in data):
            vocab = _parse_category_list(data, path, '')
        else:
            bad = next((i for i, item in enumerate(data)
                        if not isinstance(item, (str, dict))), None)
            if bad is None:  # a mix of names and objects
                bad = next(i for i, item in enumerate(data)
                           if type(item) is not type(data[0]))
            raise ValueError(
                f'{path}: [{bad}] is a {type(data[bad]).__name__}: a list '
                'vocabulary holds only names (strings) or only category '
                'objects ({"name": ..., "def": ...}).')
    elif isinstance(data, dict):
        vocab = _from_mapping(data, path)
    else:
        raise ValueError(
            f'{path}: expected a list of names, a list of category objects, '
            'an object mapping name -> description(s), or an annotation file '
            f'with "categories"; got {type(data).__name__}.')
    if not len(vocab):
        raise ValueError(f'Vocabulary file {path} defines no class names.')
    return vocab


# keys of objects that wrap or describe a class list rather than being one
_NOT_CLASS_NAMES = frozenset({
    'names', 'classes', 'class_names', 'classnames', 'labels', 'label_names',
    'vocabulary', 'version', 'info', 'licenses', 'images', 'annotations',
    'metainfo', 'meta', 'metadata', 'dataset', 'type', 'id', 'name', 'def',
    'description', 'descriptions', 'synonyms', 'templates', 'num_classes'
})

_GRAMMAR = ('a vocabulary .json is a list of names, a list of '
            '{"name": ..., "def": ...} objects, a COCO/LVIS annotation file '
            '("categories"), or an object mapping class name -> description '
            '(a string, a list of strings or null)')


def _check_mapping_shape(data: Dict[str, Any], source: str) -> None:
    """Refuse objects that are no ``name -> description(s)`` mapping."""
    keys = list(data)
    wrapper = [k for k in keys
               if isinstance(k, str) and k.strip().lower() in _NOT_CLASS_NAMES]
    if wrapper:
        lists = [k for k in wrapper if isinstance(data[k], list)]
        hint = (f'; if the classes are the list under {lists[0]!r}, make '
                'that list the whole file' if lists else '')
        raise ValueError(
            f'{source}: an object with the key(s) '
            f'{", ".join(map(repr, wrapper))} is not a vocabulary (these '
            f'would become class names); {_GRAMMAR}{hint}.')
    if keys and all(isinstance(k, str) and k.strip().lstrip('-').isdigit()
                    for k in keys):
        raise ValueError(
            f'{source}: the keys are all integers ({", ".join(keys[:3])}'
            f'{", ..." if len(keys) > 3 else ""}): an id -> name table is '
            'not a vocabulary (the ids would become class names); write the '
            f'names as a list in label order. {_GRAMMAR[0].upper()}'
            f'{_GRAMMAR[1:]}.')


def _from_mapping(data: Dict[str, Any], source: str) -> Vocabulary:
    """``{name: description | [descriptions] | None}`` in label order."""
    _check_mapping_shape(data, source)
    names, descs = [], []
    for name, value in data.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'{source}: empty class name as key.')
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(
                f'{source}: key {name!r}: a description must be a string, a '
                f'list of strings or null, got {type(value).__name__} '
                f'{value!r}; a name -> label id table is not a vocabulary: '
                'write the names as a list in label order.')
        names.append(name.strip())
        descs.append(_as_descriptions(value, f'{source}: key {name!r}'))
    if not names:
        raise ValueError(f'Vocabulary {source} defines no class names.')
    _check_unique(names, [f'key {n!r}' for n in data], source)
    return Vocabulary(names, descs, source)


def _from_list(names: Sequence[Any]) -> Vocabulary:
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'Vocabulary list: item {i} ({name!r}) is not a '
                             'non-empty string.')
    if not names:
        raise ValueError('Vocabulary list is empty.')
    names = [name.strip() for name in names]
    _check_unique(names, [f'index {i}' for i in range(len(names))], 'list')
    return Vocabulary(names, [], 'list')


def _from_source(source: Union[str, Sequence[str]]) -> Vocabulary:
    if not isinstance(source, str):
        return _from_list(list(source))
    key = source.lower()
    looks_like_file = key.endswith(('.txt', '.json')) or osp.sep in source
    if not looks_like_file and key in DATASET_VOCABULARIES:
        return Vocabulary(list(DATASET_VOCABULARIES[key]()), [], key)
    if not osp.isfile(source):
        if looks_like_file or osp.exists(source):
            raise FileNotFoundError(
                f'Vocabulary file {source} does not exist (or is not a '
                'file).')
        raise ValueError(
            f'Unknown vocabulary {source!r}: not a file and not one of the '
            f'dataset vocabularies {sorted(DATASET_VOCABULARIES)}.')
    if key.endswith('.json'):
        return _parse_json(source)
    return _parse_txt(source)


def _apply_descriptions(vocab: Vocabulary,
                        extra: Union[str, Dict[str, Any]]) -> Vocabulary:
    """Attach descriptions from another source, matched by class name."""
    if isinstance(extra, dict):
        table = {
            name: _as_descriptions(value, f'descriptions[{name!r}]')
            for name, value in extra.items()
        }
        where = 'the descriptions dict'
    else:
        other = _from_source(extra)
        table = dict(zip(other.names, other.descriptions))
        where = str(extra)
    # LVIS annotation files and mmdet metainfo spell names the same way, but
    # allow readable spellings too so a hand-written file can say 'bow
    # (weapon)'.
    readable = {readable_name(k): v for k, v in table.items()}
    descs, matched = [], 0
    for name in vocab.names:
        found = table.get(name, readable.get(readable_name(name)))
        matched += found is not None
        descs.append(list(found) if found else [])
    if not matched:
        raise ValueError(f'None of the {len(vocab)} class names of '
                         f'{vocab.source} has a description in {where}: '
                         'is it the right file?')
    return Vocabulary(list(vocab.names), descs, vocab.source)


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
        source = _from_mapping(source, 'dict')
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
        vocab = _from_source(source)
    if descriptions is True:
        return vocab
    if descriptions is False or descriptions is None:
        return vocab.without_descriptions()
    return _apply_descriptions(vocab, descriptions)


def describe(vocab: Optional[Vocabulary]) -> str:
    """A short description of a vocabulary for log messages."""
    if vocab is None:
        return 'no vocabulary'
    n_desc = sum(bool(d) for d in vocab.descriptions)
    return (f'{len(vocab)} classes from {vocab.source}'
            f'{f", {n_desc} with descriptions" if n_desc else ""}')

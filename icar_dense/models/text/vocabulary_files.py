# Copyright (c) icar_dense contributors. All rights reserved.
"""Reading vocabularies from files, dicts, lists and dataset names.

Every parser error names the file and the line or key at fault; the grammar
of vocabulary files is in the docstring of :mod:`.vocabulary`.
"""
import io
import json
import os.path as osp
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

from .class_lists import DATASET_VOCABULARIES, Vocabulary, readable_name

__all__ = ['read_text', 'from_source', 'from_mapping', 'apply_descriptions']


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
        vocab = from_mapping(data, path)
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


def from_mapping(data: Dict[str, Any], source: str) -> Vocabulary:
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


def from_source(source: Union[str, Sequence[str]]) -> Vocabulary:
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


def apply_descriptions(vocab: Vocabulary,
                       extra: Union[str, Dict[str, Any]]) -> Vocabulary:
    """Attach descriptions from another source, matched by class name."""
    if isinstance(extra, dict):
        table = {
            name: _as_descriptions(value, f'descriptions[{name!r}]')
            for name, value in extra.items()
        }
        where = 'the descriptions dict'
    else:
        other = from_source(extra)
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

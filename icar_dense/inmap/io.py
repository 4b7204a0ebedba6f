"""InMaP proxies files: save once, reuse on new data.

:func:`save_proxies` / :func:`load_proxies` read and write one file of plain
tensors, lists and dicts (safe to load with ``weights_only=True``), written
atomically. :func:`save_classifier_proxies` / :func:`load_classifier_proxies`
are the layout the test loop uses for a model with several text
classifiers: one ``(d, C)`` tensor per ``'<variant>/<module name>'``, checked
against each classifier's vocabulary and shape when loaded.

Pure torch at import time: the atomic writer and the safe reader of
:mod:`icar_dense.checkpoint` (one implementation for every file the package
writes) are imported when a file is saved or loaded.
"""
import os
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .core import InMaPResult

__all__ = [
    'save_proxies', 'load_proxies', 'save_classifier_proxies',
    'load_classifier_proxies'
]

_FILE_FORMAT = 'icar_dense.inmap.proxies'
_FILE_VERSION = 1

#: name -> variant -> ``(C(+1), D)`` proxies, the rows of a text classifier
ClassifierProxies = Dict[str, Dict[str, Tensor]]


def _plain(value: Any, where: str) -> Any:
    """Check (recursively) that ``value`` loads under ``weights_only=True``;
    tensors are moved to the CPU, tuples become lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise TypeError(f'{where}: keys must be str, got {key!r}')
            out[key] = _plain(v, f'{where}[{key!r}]')
        return out
    raise TypeError(
        f'{where}: {type(value).__name__} cannot be saved; use None, bool, '
        'int, float, str, list, dict or torch.Tensor (the file is loaded '
        'with weights_only=True)')


def save_proxies(path: Union[str, os.PathLike],
                 proxies: Union[Tensor, Mapping[str, Tensor], InMaPResult],
                 class_names: Optional[Sequence[str]] = None,
                 meta: Optional[Mapping[str, Any]] = None) -> None:
    """Save learned proxies for reuse on new data.

    The file is a ``torch.save`` of plain tensors, lists and dicts (loadable
    with ``weights_only=True``), written to a temporary file in the same
    directory and moved into place with ``os.replace``, so readers never see
    a partial file.

    Args:
        path (str | PathLike): Destination file.
        proxies (Tensor | Mapping[str, Tensor] | InMaPResult): One ``(d, C)``
            tensor, a dict of them (e.g. ``result.proxies``), or a result
            whose ``proxies`` are saved and whose ``config`` is added to the
            meta under ``'inmap'``.
        class_names (Sequence[str], optional): ``C`` class names.
        meta (Mapping, optional): Extra plain data (str keys; None, bool,
            int, float, str, list, dict, tensor values).

    Raises:
        TypeError: Values that ``weights_only`` loading would refuse.
        ValueError: Non-2-D proxies, differing ``C`` among them, or a
            ``class_names`` length that is not ``C``.
    """
    meta = {} if meta is None else dict(meta)
    if isinstance(proxies, InMaPResult):
        meta.setdefault('inmap', dict(proxies.config))
        proxies = proxies.proxies
    single = isinstance(proxies, Tensor)
    table = {'proxies': proxies} if single else dict(proxies)
    if not table:
        raise ValueError('no proxies to save')
    sizes = set()
    for name, value in table.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise TypeError('proxies must be a Tensor or a dict of str -> '
                            f'Tensor, got {name!r}: {type(value)}')
        if value.dim() != 2:
            raise ValueError(f'proxies {name!r} must be (d, C), got shape '
                             f'{tuple(value.shape)}')
        sizes.add(value.shape[1])
    if len(sizes) != 1:
        raise ValueError(f'all proxies must have the same C, got {sizes}')
    if class_names is not None:
        if isinstance(class_names,
                      str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError('class_names must be a sequence of str')
        class_names = list(class_names)
        if len(class_names) not in sizes:
            raise ValueError(f'{len(class_names)} class names for '
                             f'{sizes.pop()} proxies')
    payload = dict(
        format=_FILE_FORMAT,
        version=_FILE_VERSION,
        single=single,
        proxies={
            k: v.detach().cpu().contiguous()
            for k, v in table.items()
        },
        class_names=class_names,
        meta=_plain(meta, 'meta'))

    # the atomic write of every checkpoint (temporary file, fsync, rename)
    from icar_dense.checkpoint import save_checkpoint_file
    save_checkpoint_file(payload, os.fspath(path))


def load_proxies(
        path: Union[str, os.PathLike],
        map_location: Union[str, torch.device] = 'cpu') -> Dict[str, Any]:
    """Load proxies written by :func:`save_proxies` (``weights_only=True``).

    Args:
        path (str | PathLike): File to read.
        map_location (str | torch.device): Where to put the tensors.

    Returns:
        dict: ``proxies`` (a Tensor if a single tensor was saved, else a
        dict of str -> Tensor), ``class_names`` (list[str] | None) and
        ``meta`` (dict).

    Raises:
        ValueError: If the file was not written by :func:`save_proxies`.
    """
    # the same safe load and clear errors as every checkpoint
    from icar_dense.checkpoint import load_checkpoint_file
    payload = load_checkpoint_file(os.fspath(path), map_location)
    if not isinstance(payload, dict) or payload.get('format') != _FILE_FORMAT:
        raise ValueError(f'{path} is not an InMaP proxies file '
                         f'(written by save_proxies)')
    if payload.get('version', 0) > _FILE_VERSION:
        raise ValueError(f'{path} has format version {payload["version"]}; '
                         f'this code reads up to {_FILE_VERSION}')
    proxies = payload['proxies']
    if payload['single']:
        proxies = proxies['proxies']
    return dict(
        proxies=proxies,
        class_names=payload['class_names'],
        meta=payload['meta'])


def save_classifier_proxies(path: Union[str, os.PathLike],
                            proxies: ClassifierProxies,
                            classifiers: Mapping[str, torch.nn.Module],
                            **meta: Any) -> None:
    """Save the proxies of a model's text classifiers in one file.

    Args:
        path (str | PathLike): Destination file.
        proxies (dict): Classifier module name -> variant -> ``(C(+1), D)``
            proxies (rows, as ``TextClassifier.set_class_proxies`` takes
            them); stored as ``(D, C(+1))`` under ``'<variant>/<name>'``.
        classifiers (Mapping[str, Module]): The classifiers by module name
            (their vocabulary and background flags go into the meta).
        **meta: Further plain meta data (task, options, summary...).
    """
    table = OrderedDict()
    for name, per_variant in proxies.items():
        for variant, value in per_variant.items():
            table[f'{variant}/{name}'] = value.t().contiguous()
    first = next(iter(classifiers.values()))
    save_proxies(
        path,
        table,
        meta=dict(
            class_names=list(first.class_names),
            background={
                n: m.bg_embed is not None
                for n, m in classifiers.items()
            },
            **meta))


def load_classifier_proxies(path: Union[str, os.PathLike],
                            classifiers: Mapping[str, torch.nn.Module],
                            variants: Sequence[str]) -> ClassifierProxies:
    """Load and check the proxies of :func:`save_classifier_proxies`.

    A file holding one tensor (``save_proxies(path, tensor)``) is accepted
    for a model with one classifier, for every variant.

    Args:
        path (str | PathLike): The file.
        classifiers (Mapping[str, Module]): The model's classifiers by
            module name.
        variants (Sequence[str]): The variants to read.

    Returns:
        dict: Name -> variant -> ``(C(+1), D)`` float32 proxies.

    Raises:
        ValueError: Another vocabulary, shape or number of classifiers.
        KeyError: A variant or classifier the file does not hold.
    """
    data = load_proxies(path)
    table = data['proxies']
    names = (data['meta'] or {}).get('class_names') or data['class_names']
    if isinstance(table, Tensor):
        if len(classifiers) != 1:
            raise ValueError(
                f'{path} holds one proxy tensor but the model has '
                f'{len(classifiers)} text classifiers {list(classifiers)}; '
                'save them with save_classifier_proxies')
        table = {f'{v}/{next(iter(classifiers))}': table for v in variants}
    proxies = OrderedDict()
    for name, module in classifiers.items():
        if names is not None and list(names) != module.class_names:
            raise ValueError(
                f'the proxies in {path} are for {len(names)} classes '
                f'{list(names)[:5]}... but {name} has {module.num_classes} '
                f'classes {module.class_names[:5]}...: use the same '
                'vocabulary')
        proxies[name] = OrderedDict()
        for variant in variants:
            key = f'{variant}/{name}'
            if key not in table:
                raise KeyError(f'{path} has no proxies {key!r}; it holds '
                               f'{sorted(table)}')
            value = table[key]
            cols = module.num_classes + (module.bg_embed is not None)
            if value.shape != (module.embed_dim, cols):
                raise ValueError(f'proxies {key!r} of {path} have shape '
                                 f'{tuple(value.shape)}, {name} needs '
                                 f'({module.embed_dim}, {cols})')
            proxies[name][variant] = value.t().float().contiguous()
    return proxies

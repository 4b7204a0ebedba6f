"""What :class:`~icar_dense.engine.runner.ICARRunner` checks, as functions.

* :func:`find_latest_checkpoint` -- the checkpoint ``--resume`` continues
  from, surviving a missing, empty or stale ``last_checkpoint`` pointer
  (mmengine's own gives up and starts from scratch).
* :func:`check_not_empty` / :func:`describe_dataset` -- a dataset with no
  samples is refused naming its class and annotation file (mmengine fails
  with "need at least one array to concatenate", or its ``InfiniteSampler``
  loops forever).

Nothing here changes mmengine; ``import icar_dense`` only defines them.
"""
import glob
import os.path as osp
import re
from typing import Optional

from mmengine.logging import print_log

_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def newest_checkpoint_in(path: str) -> Optional[str]:
    """The ``iter_N.pth`` (else ``epoch_N.pth``) with the largest N."""
    best = {}
    for file in glob.glob(osp.join(glob.escape(path), '*.pth')):
        match = _CKPT_NAME.match(osp.basename(file))
        if match and osp.isfile(file):
            kind, number = match.group(1), int(match.group(2))
            if number >= best.get(kind, (-1, None))[0]:
                best[kind] = (number, file)
    for kind in ('iter', 'epoch'):
        if kind in best:
            return best[kind][1]
    return None


def find_latest_checkpoint(path: str) -> Optional[str]:
    """mmengine's ``find_latest_checkpoint`` that survives a bad pointer.

    ``last_checkpoint`` names the checkpoint to resume; when it is missing,
    empty or names a file that does not exist (local paths only), the newest
    ``iter_*.pth``/``epoch_*.pth`` in ``path`` is used and a warning says so.
    """
    save_file = osp.join(path, 'last_checkpoint')
    last_saved = None
    if osp.exists(save_file):
        with open(save_file) as f:
            last_saved = f.read().strip() or None
    if last_saved is not None and ('://' in last_saved
                                   or osp.isfile(last_saved)):
        return last_saved
    fallback = newest_checkpoint_in(path)
    if last_saved is None and fallback is None:
        print_log('Did not find last_checkpoint to be resumed.',
                  logger='current')
        return None
    reason = (f'{save_file} names {last_saved!r}, which does not exist'
              if last_saved is not None else
              f'{save_file} is missing or empty')
    print_log(
        f'{reason}; resuming from the newest checkpoint in {path}: '
        f'{fallback}' if fallback else f'{reason}; no checkpoint to resume',
        logger='current', level=30)
    return fallback


def _field(dataset, key):
    if isinstance(dataset, dict):
        return dataset.get(key)
    return getattr(dataset, key, None)


def describe_dataset(dataset) -> str:
    """``Class(ann_file=..., data_root=...)`` of a dataset or its config."""
    inner = dataset
    while _field(inner, 'dataset') is not None and \
            _field(inner, 'ann_file') is None:
        inner = _field(inner, 'dataset')  # RepeatDataset, ... and configs
    parts = []
    for key in ('ann_file', 'data_root', 'data_prefix', 'filter_cfg'):
        value = _field(inner, key)
        if value:
            parts.append(f'{key}={value!r}')
    if isinstance(inner, dict):
        name = inner.get('type')
        name = getattr(name, '__name__', name)
    else:
        name = type(inner).__name__
    return f'{name}({", ".join(parts)})'


def empty_dataset_error(dataset) -> ValueError:
    """The error for a dataset (or dataset config) without samples."""
    return ValueError(
        f'dataset {describe_dataset(dataset)} has no samples (all filtered '
        'out, an empty annotation file, or a wrong data_root / '
        'data_prefix); training or testing on it cannot start')


def check_not_empty(dataset) -> None:
    """Raise :func:`empty_dataset_error` if ``dataset`` has no samples.

    IterableDatasets (no ``len``) are not checked.
    """
    try:
        size = len(dataset)
    except TypeError:
        return
    if size == 0:
        raise empty_dataset_error(dataset)


__all__ = [
    'check_not_empty', 'describe_dataset', 'empty_dataset_error',
    'find_latest_checkpoint', 'newest_checkpoint_in'
]

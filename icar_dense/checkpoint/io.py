"""Reading and writing checkpoint files: safe loading, atomic writes.

* :func:`load_checkpoint_file` -- ``torch.load(weights_only=True)`` with
  the authors' ``argparse.Namespace`` allowed and a refusal that names the
  file and the way to re-save it; an authors' training file comes back as
  ``{'model': ...}``.
* :func:`atomic_write` / :func:`save_checkpoint_file` /
  :func:`write_json_atomic` -- a file at its final name is always complete,
  whenever the process dies.  Runs write checkpoints through it by the
  ``atomic_local`` file backend (:mod:`icar_dense.engine.fileio`) that
  ``ICARRunner`` and ``SafeCheckpointHook`` name.
"""
import argparse
import contextlib
import glob
import json
import os
import os.path as osp
import pickle
import re
import uuid

import torch

from .errors import CheckpointError, strip_ansi
from .layout import is_authors_training_file

# What the authors' saver pickles besides tensors, numbers, strings and
# containers: ``args``, an argparse.Namespace.  Unpickling one creates the
# object and fills its ``__dict__``; no code of the file runs.
AUTHORS_SAFE_GLOBALS = (argparse.Namespace, )


# ----------------------------------------------------------------------------
# atomic local writes
# ----------------------------------------------------------------------------
def atomic_write(data, path: str) -> None:
    """Write ``data`` (bytes or str) so that ``path`` is old or complete.

    The temporary file ``.NAME.<pid>.<random>.tmp`` lives next to ``path``
    (same file system, so the rename is atomic) and is created with the
    process umask like any other file.  It is fsync'ed before the rename and
    the folder after it, so the new name never points at unwritten data.
    """
    path = osp.abspath(str(path))
    directory = osp.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = osp.join(
        directory,
        f'.{osp.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    if isinstance(data, str):
        data = data.encode('utf-8')
    try:
        with open(tmp, 'xb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)
    _remove_stale_temporaries(path)


_TMP_NAME = re.compile(r'^\.(?P<base>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$')


def write_json_atomic(obj, path: str) -> None:
    """Write JSON so that ``path`` is the old or the complete new file
    (numpy / torch scalars and arrays as numbers and lists)."""
    atomic_write(json.dumps(obj, indent=2, default=_to_builtin), path)


def _to_builtin(value):
    if hasattr(value, 'tolist'):  # numpy / torch: scalars and arrays
        return value.tolist()
    return str(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporaries of ``path`` left by processes that were killed.

    Only files named by :func:`atomic_write` whose process no longer runs
    on this machine are removed (a killed run leaves one per checkpoint it
    was writing; checkpoints are large).
    """
    directory, base = osp.split(path)
    pattern = osp.join(glob.escape(directory), f'.{glob.escape(base)}.*.tmp')
    for tmp in glob.glob(pattern):
        match = _TMP_NAME.match(osp.basename(tmp))
        if match is None or match.group('base') != base:
            continue
        pid = int(match.group('pid'))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            os.remove(tmp)
        except OSError:
            pass


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint_file(obj, path):
    """``torch.save`` to a temporary file, then rename: never half-written."""
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(buffer.getvalue(), path)


# ----------------------------------------------------------------------------
# safe loading
# ----------------------------------------------------------------------------
@contextlib.contextmanager
def _authors_globals():
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is not None:
        with safe_globals(list(AUTHORS_SAFE_GLOBALS)):
            yield
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch 2.4: no context manager
        add(list(AUTHORS_SAFE_GLOBALS))
    yield


def _unsafe_globals(path):
    """The globals of ``path`` the safe loader refuses (best effort)."""
    lister = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                     None)
    if lister is None:
        return []
    try:
        with _authors_globals():
            return list(lister(path))
    except Exception:  # legacy (non-zip) files cannot be listed
        return []


def _refusal(path, err):
    lines = [strip_ansi(line).strip() for line in str(err).splitlines()]
    reason = next((line for line in lines if 'WeightsUnpickler error' in line),
                  next((line for line in lines if line), ''))
    reason = reason.replace('WeightsUnpickler error: ', '')
    reason = reason.split(' Please use `torch.serialization')[0]
    unsafe = _unsafe_globals(path)
    holds = (f'it pickles {", ".join(unsafe)}' if unsafe else
             'it contains objects that are not plain tensors/containers')
    return CheckpointError(
        f'refusing to load {path!r}: {holds}, which could run code when '
        f'unpickled ({reason}). Accepted besides tensors and containers: '
        'argparse.Namespace (the `args` of the iCAR authors\' checkpoints) '
        'and the types mmengine stores. If you trust the file, re-save its '
        'tensors once with `python tools/resave_trusted_checkpoint.py '
        f'{path} OUT.pth` (that script unpickles it fully) and use OUT.pth.')


def _describe_entry(key, value):
    kind = type(value).__name__
    return f'{key} ({kind})'


def keep_model_entry(checkpoint, source='checkpoint', logger='current'):
    """The authors' training file reduced to ``{'model': ...}``.

    Their saver also stores the training state (``optimizer``, ``epoch``,
    ``scaler``, ``args``, ...); none of it is needed to use the weights.
    One log line names the skipped entries.  Other checkpoints are returned
    unchanged.
    """
    if not is_authors_training_file(checkpoint) or len(checkpoint) == 1:
        return checkpoint
    skipped = [_describe_entry(k, v) for k, v in checkpoint.items()
               if k != 'model']
    from mmengine.logging import print_log
    print_log(
        f'{source}: an iCAR training checkpoint as the authors saved it: '
        f"using its 'model' entry; skipped {len(skipped)} top-level "
        f'entries (training state, not weights): {", ".join(skipped)}',
        logger=logger)
    return {'model': checkpoint['model']}


def load_checkpoint_file(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and a clear refusal.

    Only tensors, containers and the allow-listed types (``argparse.
    Namespace``, see :data:`AUTHORS_SAFE_GLOBALS`, and mmengine's types, see
    :mod:`icar_dense.compat`) are unpickled: a file that would run code is
    refused before anything executes, with a message (free of terminal
    escape codes) that names the file and the way to re-save it.  A file as
    the iCAR authors saved it comes back as ``{'model': ...}`` (see
    :func:`keep_model_entry`).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    try:
        with _authors_globals():
            checkpoint = torch.load(
                path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported operand' in str(err):
            # bytes that are no pickle opcode: text, JSON, an HTML page...
            raise CheckpointError(
                f'cannot read checkpoint {path!r}: not a torch file '
                '(no pickle data; a text or HTML file saved as .pth?)'
            ) from err
        raise _refusal(path, err) from err
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError) as err:
        # what the unpickler raises on bytes that are not a pickle
        raise CheckpointError(
            f'cannot read checkpoint {path!r} (truncated or not a torch '
            f'file?): {type(err).__name__}: {strip_ansi(err)}') from err
    return keep_model_entry(checkpoint, path)


def read_checkpoint(filename, map_location='cpu'):
    """A checkpoint's content: local files through
    :func:`load_checkpoint_file`, other schemes (``http(s)://``, ...)
    through mmengine's ``CheckpointLoader``."""
    if '://' not in str(filename):
        return load_checkpoint_file(osp.expanduser(str(filename)),
                                    map_location)
    from mmengine.runner import CheckpointLoader
    return CheckpointLoader.load_checkpoint(filename, map_location)


def load_checkpoint(model,
                    filename,
                    map_location='cpu',
                    strict=False,
                    logger=None,
                    revise_keys=((r'^module\.', ''), )):
    """``mmengine.runner.load_checkpoint`` reading through
    :func:`read_checkpoint`.

    mmengine's own reads local files with ``torch.load``, whose
    ``weights_only`` default refuses the authors' ``argparse.Namespace``
    (and, before torch 2.6, would unpickle anything).  The file is then
    loaded into ``model`` by mmengine's ``_load_checkpoint_to_model``, so a
    model's own ``_load_from_state_dict`` (the iCAR mapping of the segmentor
    and the recognizer) runs as usual.

    Returns:
        dict: The checkpoint.
    """
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    checkpoint = read_checkpoint(filename, map_location)
    return _load_checkpoint_to_model(model, checkpoint, strict, logger,
                                     list(revise_keys))

"""Crash-safe checkpoints, safe checkpoint loading and clearer build errors.

:func:`apply` (idempotent, called by ``import icar_dense``) changes mmengine
0.10.7 in these places; each is covered by ``tests/test_reliability.py`` or
``tests/test_bad_input.py``.  (Issue 17 moves these into registered
components; done so far: the crash-safe checkpoint rotation is
:class:`~icar_dense.engine.hooks.SafeCheckpointHook`, SIGTERM handling
:class:`~icar_dense.engine.hooks.SignalCheckpointHook`, both named in
``configs/_base_/default_runtime_*.py``.)

* **Atomic writes.** ``LocalBackend.put``/``put_text`` (what
  ``mmengine.runner.save_checkpoint`` and ``mmengine.fileio.dump`` write local
  files with) write a hidden temporary file in the same folder, flush and
  fsync it, then rename it over the target: a file at its final name is
  always complete, whenever the process dies (the temporary file of a
  killed process is removed when the same file is written again).
* **Finding the checkpoint to resume.** ``find_latest_checkpoint`` falls
  back to the newest ``iter_*.pth``/``epoch_*.pth`` of the work dir when the
  pointer file is missing, empty or names a file that does not exist.
* **Safe loading.** mmengine's ``CheckpointLoader`` reads local files with
  :func:`icar_dense.utils.checkpoint.load_checkpoint_file` (``weights_only``
  with the allow-list of :mod:`icar_dense.compat`; a pickle that would run
  code is refused with a message naming the file) and downloads
  (``http(s)://``, and through them ``torchvision://``/``open-mmlab://``)
  to the torch hub cache before loading them the same way: mmengine's
  download path called ``torch.load(weights_only=False)``.
* **Misspelled types.** ``Registry.build`` adds ``did you mean 'X'?`` to
  mmengine's "X is not in the registry" ``KeyError`` (closest names of the
  registry, its parents and, scope-prefixed, the other OpenMMLab scopes).
* **Empty datasets.** A dataset with no samples (e.g. everything filtered
  out) is refused, naming its class and annotation file, when it is
  serialised (mmengine failed with "need at least one array to
  concatenate") and by ``Runner.build_dataloader`` (mmengine's
  ``InfiniteSampler`` would otherwise loop forever).
"""
import difflib
import glob
import os
import os.path as osp
import re
import uuid
from typing import Iterable, List, Optional

import torch
from mmengine.logging import print_log

_applied = False


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


def _atomic_local_backend() -> None:
    from mmengine.fileio.backends.local_backend import LocalBackend
    if getattr(LocalBackend.put, '_icar_patched', False):
        return

    def put(self, obj: bytes, filepath) -> None:
        """Write bytes to ``filepath`` atomically (temporary file + rename)."""
        atomic_write(bytes(obj), str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically (temporary file + rename)."""
        atomic_write(obj.encode(encoding), str(filepath))

    put._icar_patched = put_text._icar_patched = True
    LocalBackend.put = put
    LocalBackend.put_text = put_text


# ----------------------------------------------------------------------------
# find_latest_checkpoint with a fallback
# ----------------------------------------------------------------------------
_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def newest_checkpoint_in(path: str) -> Optional[str]:
    """The ``iter_N.pth`` (else ``epoch_N.pth``) with the largest N."""
    best = {}
    for file in glob.glob(osp.join(path, '*.pth')):
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


def _robust_find_latest_checkpoint() -> None:
    import mmengine.runner as runner_pkg
    import mmengine.runner.checkpoint as checkpoint_mod
    import mmengine.runner.runner as runner_mod
    for module in (runner_pkg, checkpoint_mod, runner_mod):
        module.find_latest_checkpoint = find_latest_checkpoint


# ----------------------------------------------------------------------------
# checkpoint loading through the safe loader
# ----------------------------------------------------------------------------
def load_from_local(filename, map_location=None):
    """mmengine's local-file checkpoint loader, through the safe loader."""
    from icar_dense.utils.checkpoint import load_checkpoint_file
    return load_checkpoint_file(osp.expanduser(filename),
                                map_location=map_location)


def _hub_cache_file(url: str, model_dir: Optional[str]) -> str:
    from urllib.parse import urlparse
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def load_from_http(filename, map_location=None, model_dir=None,
                   progress=False):
    """Download to the torch hub cache (rank 0 first), load it safely.

    Same cache file as ``torch.hub.load_state_dict_from_url``; the loading
    goes through :func:`~icar_dense.utils.checkpoint.load_checkpoint_file`.
    """
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    cached = _hub_cache_file(filename, model_dir)

    def download():
        if not osp.isfile(cached):
            print_log(f'Downloading {filename} to {cached}', logger='current')
            part = cached + f'.{os.getpid()}.part'
            torch.hub.download_url_to_file(filename, part, progress=progress)
            os.replace(part, cached)

    if rank == 0:
        download()
    if world_size > 1:
        barrier()
        if rank > 0:
            download()
    return load_from_local(cached, map_location)


def _safe_checkpoint_loaders() -> None:
    import mmengine.runner.checkpoint as checkpoint_mod
    from mmengine.runner import CheckpointLoader
    if getattr(checkpoint_mod.load_from_local, '_icar_patched', False):
        return
    load_from_local._icar_patched = load_from_http._icar_patched = True
    CheckpointLoader.register_scheme('', load_from_local, force=True)
    CheckpointLoader.register_scheme(('http://', 'https://'), load_from_http,
                                     force=True)
    # torchvision://, open-mmlab://, mmcls:// call these module globals
    checkpoint_mod.load_from_local = load_from_local
    checkpoint_mod.load_from_http = load_from_http


# ----------------------------------------------------------------------------
# "did you mean" for unknown registry types
# ----------------------------------------------------------------------------
_NOT_IN_REGISTRY = re.compile(
    r'(?P<type>[\w.]+) is not in the (?:(?P<scope>\w+)::)?(?P<name>[\w ]+?) '
    r'registry')


def _registry_tree(registry) -> List:
    """``registry``, its parents, then every other registry of the tree."""
    chain = []
    node = registry
    while node is not None:
        chain.append(node)
        node = node.parent
    seen = {id(r) for r in chain}
    others = []
    stack = [chain[-1]]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            others.append(node)
        stack.extend(node.children.values())
    return chain, others


def _find_registry(registry, scope: Optional[str]):
    """The registry of ``scope`` in the tree of ``registry``."""
    if scope is None or registry.scope == scope:
        return registry
    chain, others = _registry_tree(registry)
    for node in chain + others:
        if node.scope == scope:
            return node
    return registry


def _close_names(word: str, names: Iterable[str], n: int = 3) -> List[str]:
    names = sorted(set(names))
    lower = {}
    for name in names:
        lower.setdefault(name.lower(), name)
    matches = difflib.get_close_matches(word.lower(), list(lower), n=n,
                                        cutoff=0.6)
    return [lower[m] for m in matches]


def suggest_registered_names(registry, name: str) -> List[str]:
    """Registered names close to ``name``: own scope first, then others.

    Names found only in another scope come scope-prefixed
    (``'mmdet.SwinTransformer'``), the spelling a config can use.
    """
    if '.' in name:
        name = name.split('.', 1)[1]
    chain, others = _registry_tree(registry)
    local = _close_names(name, (k for r in chain for k in r.module_dict))
    if local:
        return local
    scoped = {}
    for node in others:
        for key in node.module_dict:
            scoped.setdefault(key, f'{node.scope}.{key}')
    return [scoped[m] for m in _close_names(name, scoped)]


def _with_suggestion(registry, err: KeyError) -> Optional[KeyError]:
    message = err.args[0] if err.args and isinstance(err.args[0],
                                                     str) else None
    if message is None or 'did you mean' in message:
        return None
    match = _NOT_IN_REGISTRY.search(message)
    if match is None:
        return None
    target = _find_registry(registry, match.group('scope'))
    names = suggest_registered_names(target, match.group('type'))
    if not names:
        return None
    hint = ' or '.join(repr(n) for n in names)
    return KeyError(f'{match.group("type")!r} is not a registered '
                    f'{match.group("name")} type; did you mean {hint}? '
                    f'({message})')


def _registry_suggestions() -> None:
    from mmengine.registry import Registry
    original = Registry.build
    if getattr(original, '_icar_patched', False):
        return

    def build(self, cfg, *args, **kwargs):
        try:
            return original(self, cfg, *args, **kwargs)
        except KeyError as err:
            better = _with_suggestion(self, err)
            if better is None:
                raise
            raise better.with_traceback(err.__traceback__) from None

    build._icar_patched = True
    build.__doc__ = original.__doc__
    Registry.build = build


# ----------------------------------------------------------------------------
# empty datasets
# ----------------------------------------------------------------------------
def describe_dataset(dataset) -> str:
    """``Class(ann_file=..., data_root=...)`` for error messages."""
    inner = dataset
    while hasattr(inner, 'dataset') and not hasattr(inner, 'ann_file'):
        inner = inner.dataset  # RepeatDataset, ClassBalancedDataset, ...
    parts = []
    for key in ('ann_file', 'data_root', 'data_prefix', 'filter_cfg'):
        value = getattr(inner, key, None)
        if value:
            parts.append(f'{key}={value!r}')
    return f'{type(inner).__name__}({", ".join(parts)})'


def check_not_empty(dataset, owner=None) -> None:
    """A clear ``ValueError`` if ``dataset`` has no samples.

    Args:
        dataset: Anything with ``len``; IterableDatasets are not checked.
        owner: The dataset object to describe (defaults to ``dataset``).
    """
    try:
        size = len(dataset)
    except TypeError:  # an IterableDataset
        return
    if size == 0:
        described = describe_dataset(dataset if owner is None else owner)
        raise ValueError(
            f'dataset {described} has no samples (all filtered out, an '
            'empty annotation file, or a wrong data_root / data_prefix); '
            'training or testing on it cannot start')


def _check_empty_datasets() -> None:
    from mmengine.runner import Runner
    original = Runner.__dict__['build_dataloader'].__func__
    if getattr(original, '_icar_patched', False):
        return

    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        result = original(dataloader, seed=seed,
                          diff_rank_seed=diff_rank_seed)
        check_not_empty(result.dataset)
        return result

    build_dataloader._icar_patched = True
    build_dataloader.__doc__ = original.__doc__
    Runner.build_dataloader = staticmethod(build_dataloader)

    # with serialize_data=True (the default) mmengine fails earlier, in
    # np.concatenate: "need at least one array to concatenate"
    from mmengine.dataset import BaseDataset
    serialize = BaseDataset._serialize_data

    def _serialize_data(self):
        if len(self.data_list) == 0:
            check_not_empty(self.data_list, self)
        return serialize(self)

    _serialize_data._icar_patched = True
    BaseDataset._serialize_data = _serialize_data


# ----------------------------------------------------------------------------
def apply() -> None:
    """Apply every change once; later calls do nothing."""
    global _applied
    if _applied:
        return
    _atomic_local_backend()
    _robust_find_latest_checkpoint()
    _safe_checkpoint_loaders()
    _registry_suggestions()
    _check_empty_datasets()
    _applied = True

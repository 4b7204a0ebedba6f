"""Fixes that make the released OpenMMLab stack work on current torch/numpy.

Each fix targets one documented defect of a pinned release, is applied once by
``import icar_dense`` (``apply()`` is idempotent) and is covered by
``tests/test_compat.py``:

* ``mmaction2 1.2.0`` ships without ``mmaction/models/localizers/drn``
  (wheel and sdist), so ``import mmaction.models`` fails.  We provide the
  missing module with a ``DRN`` placeholder that raises a clear error if
  someone builds it.
* ``mmaction.models`` imports its VindLU code whenever transformers is
  installed, and that code imports names current transformers no longer
  exports.  We clear mmaction's own ``WITH_MULTIMODAL`` switch before
  ``mmaction.models`` is imported; it then registers placeholders for its
  multimodal models only, and transformers itself is untouched.
* torch >= 2.6 loads checkpoints with ``weights_only=True`` by default, and
  mmengine 0.10.7 stores message-hub buffers and numpy values in its
  checkpoints, so resuming fails.  We allow-list exactly those types with
  ``torch.serialization.add_safe_globals`` and make ``HistoryBuffer`` pickle
  its data only (mmengine also pickled functions through ``getattr``, which
  cannot be allow-listed safely): code-executing pickles are still refused.
* ``mmengine``'s ``init_dist`` calls ``torch.cuda.set_device`` even for gloo on
  a machine without a GPU, and its runner hands ``device_ids`` to DDP for a CPU
  module; both make CPU multi-process training impossible.
* ``mmengine``'s ``load_from_http`` (``http(s)://`` checkpoints, and through
  it ``torchvision://`` / ``open-mmlab://``) loads downloads with
  ``torch.utils.model_zoo.load_url``, i.e. ``torch.load(weights_only=False)``:
  on torch >= 2.6, where every other load refuses code-executing pickles, a
  downloaded file could still run code.  Downloads go to the same torch hub
  cache and are loaded with ``weights_only=True`` (the allow-list above) by
  :func:`icar_dense.checkpoint.load_checkpoint_file`.
* ``lvis 0.5.3``'s evaluator uses ``np.float`` (removed in numpy 1.24).

:data:`CHANGED_ATTRIBUTES` lists every attribute of an installed package these
fixes replace; nothing else in ``icar_dense`` replaces one at import
(``tests/test_import_side_effects.py`` checks it).
"""
import importlib
import importlib.util
import os
import os.path as osp
import sys
import types
import warnings

import numpy as np
import torch

_applied = False

#: ``(owner, attribute)`` of every attribute the fixes replace; an owner is a
#: module, a class (``module.Class``) or a class's table
#: (``module.Class._schemes``: its keys).  Read by the import side-effect
#: test and the documentation.
CHANGED_ATTRIBUTES = (
    ('mmaction.utils.dependency', 'WITH_MULTIMODAL'),
    ('mmengine.logging.history_buffer.HistoryBuffer', '__getstate__'),
    ('mmengine.dist.utils', '_init_dist_pytorch'),
    ('mmengine.model.wrappers.distributed.MMDistributedDataParallel',
     '__init__'),
    ('mmengine.runner.checkpoint', 'load_from_http'),
    ('mmengine.runner.checkpoint.CheckpointLoader._schemes', 'http://'),
    ('mmengine.runner.checkpoint.CheckpointLoader._schemes', 'https://'),
    ('lvis.eval', 'np'),
)


# ----------------------------------------------------------------------------
# mmaction2 1.2.0
# ----------------------------------------------------------------------------
def _install_missing_drn_module():
    """Provide ``mmaction.models.localizers.drn`` when the release lacks it."""
    pkg_name = 'mmaction.models.localizers.drn'
    if pkg_name in sys.modules:
        return
    # find_spec('mmaction.models.localizers') would import mmaction.models,
    # the very import that fails: locate the folder from the top package.
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return
    import os
    for location in spec.submodule_search_locations:
        if os.path.isdir(
                os.path.join(location, 'models', 'localizers', 'drn')):
            return  # a complete installation: nothing to fix

    class DRN:
        """Placeholder: the DRN localizer is missing from mmaction2 1.2.0."""

        def __init__(self, *args, **kwargs):
            raise ImportError(
                'mmaction2 1.2.0 was released without '
                'mmaction/models/localizers/drn, so the DRN localizer cannot '
                'be built. Install mmaction2 from its git repository to use '
                'it.')

    package = types.ModuleType(pkg_name)
    package.__path__ = []
    package.__package__ = pkg_name
    module = types.ModuleType(pkg_name + '.drn')
    module.DRN = DRN
    package.drn = module
    package.DRN = DRN
    sys.modules[pkg_name] = package
    sys.modules[pkg_name + '.drn'] = module


def _disable_mmaction_multimodal():
    """Make ``mmaction.models`` skip its VindLU (transformers) models."""
    if 'mmaction.models' in sys.modules:
        return
    try:
        from mmaction.utils import dependency
    except ImportError:  # mmaction2 not installed
        return
    dependency.WITH_MULTIMODAL = False


def _register_drn_placeholder():
    from mmaction.registry import MODELS
    if 'DRN' not in MODELS.module_dict:
        drn = sys.modules.get('mmaction.models.localizers.drn')
        if drn is not None:
            MODELS.register_module(name='DRN', module=drn.DRN)


class _MMActionModelsHook:
    """Meta path finder: the mmaction2 fixes, right before
    ``mmaction.models`` is imported (by whoever imports it), so that
    ``import icar_dense`` itself does not import mmaction2."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == 'mmaction.models':
            _disable_mmaction_multimodal()
            _install_missing_drn_module()
        return None  # the usual finders import it

    def invalidate_caches(self):
        pass


def fix_mmaction():
    if 'mmaction.models' in sys.modules:
        # imported before icar_dense: fix what still can be
        _install_missing_drn_module()
        return
    if importlib.util.find_spec('mmaction') is None:
        return
    if not any(isinstance(f, _MMActionModelsHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _MMActionModelsHook())


# ----------------------------------------------------------------------------
# torch >= 2.6 weights_only loading of mmengine checkpoints
# ----------------------------------------------------------------------------
def mmengine_safe_globals():
    """The non-tensor types mmengine 0.10.7 writes into a checkpoint."""
    import collections

    from mmengine.logging import HistoryBuffer
    safe = [
        HistoryBuffer,
        collections.OrderedDict,
        collections.defaultdict,
        np.ndarray,
        np.dtype,
    ]
    # numpy arrays and scalars pickle through these reconstructors
    for modname in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in ('_reconstruct', 'scalar'):
            if hasattr(mod, attr):
                safe.append(getattr(mod, attr))
        break
    # np.dtype('float64') pickles as numpy.dtypes.Float64DType etc.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                safe.append(obj)
    return safe


def _history_buffer_data_only():
    """Pickle HistoryBuffer without its statistics-method table.

    mmengine pickles the table's functions as ``builtins.getattr(cls, name)``
    calls; allow-listing ``getattr`` would let a checkpoint reach any
    attribute of any allowed object, i.e. run code.  The table is class-level
    and filled at import time (defaults and ``register_statistics``), so the
    data alone restores the buffer exactly.
    """
    from mmengine.logging import HistoryBuffer
    if getattr(HistoryBuffer.__getstate__, '_icar_patched', False):
        return

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop('statistics_methods', None)
        return state

    __getstate__._icar_patched = True
    HistoryBuffer.__getstate__ = __getstate__


def allow_mmengine_checkpoints():
    _history_buffer_data_only()
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 loads them anyway
        return
    add_safe_globals(mmengine_safe_globals())


# ----------------------------------------------------------------------------
# mmengine distributed launch on machines without a GPU
# ----------------------------------------------------------------------------
def fix_cpu_distributed():
    import mmengine.dist.utils as dist_utils
    from mmengine.model import MMDistributedDataParallel

    original_init_dist = dist_utils._init_dist_pytorch
    if not getattr(original_init_dist, '_icar_patched', False):

        def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
            if torch.cuda.is_available() or init_backend != 'torch':
                return original_init_dist(backend, init_backend, **kwargs)
            if backend == 'nccl':
                warnings.warn('No CUDA device: using the gloo backend '
                              'instead of nccl for distributed training.')
                backend = 'gloo'
            import torch.distributed as torch_dist
            torch_dist.init_process_group(backend=backend, **kwargs)

        _init_dist_pytorch._icar_patched = True
        dist_utils._init_dist_pytorch = _init_dist_pytorch

    original_ddp_init = MMDistributedDataParallel.__init__
    if not getattr(original_ddp_init, '_icar_patched', False):

        def __init__(self, module, detect_anomalous_params=False, **kwargs):
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            if on_cpu and kwargs.get('device_ids') is not None:
                # DDP refuses device_ids for a CPU module; mmengine's runner
                # always passes [LOCAL_RANK].
                kwargs['device_ids'] = None
            original_ddp_init(
                self,
                module,
                detect_anomalous_params=detect_anomalous_params,
                **kwargs)

        __init__._icar_patched = True
        MMDistributedDataParallel.__init__ = __init__


# ----------------------------------------------------------------------------
# mmengine 0.10.7 loads http(s) checkpoints with weights_only=False
# ----------------------------------------------------------------------------
def load_from_http(filename, map_location=None, model_dir=None,
                   progress=False):
    """Download to the torch hub cache (rank 0 first), load it with
    :func:`icar_dense.checkpoint.load_checkpoint_file` (``weights_only``)."""
    from urllib.parse import urlparse

    from mmengine.dist import barrier, get_dist_info
    from mmengine.logging import print_log

    from icar_dense.checkpoint.io import load_checkpoint_file
    rank, world_size = get_dist_info()
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path))

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
    return load_checkpoint_file(cached, map_location=map_location)


def fix_http_checkpoint_loading():
    import mmengine.runner.checkpoint as checkpoint_mod
    if checkpoint_mod.load_from_http is load_from_http:
        return
    checkpoint_mod.CheckpointLoader.register_scheme(
        ('http://', 'https://'), load_from_http, force=True)
    # torchvision:// and open-mmlab:// call this module global
    checkpoint_mod.load_from_http = load_from_http


# ----------------------------------------------------------------------------
# lvis 0.5.3 on numpy >= 1.24
# ----------------------------------------------------------------------------
class _NumpyWithFloat(types.ModuleType):
    """numpy as lvis 0.5.3 expects it: ``np.float`` is the builtin float."""

    float = float

    def __init__(self):
        super().__init__('numpy')

    def __getattr__(self, name):
        return getattr(np, name)


def _give_lvis_eval_float(module):
    if not hasattr(np, 'float') and not isinstance(module.np,
                                                   _NumpyWithFloat):
        # scoped to the lvis evaluator: numpy itself stays unmodified
        module.np = _NumpyWithFloat()


class _AfterImport:
    """Meta path finder running ``callback(module)`` right after ``name``
    is imported (by whoever imports it): a fix of a module that
    ``import icar_dense`` does not import itself."""

    def __init__(self, name, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, callback = spec.loader, self.callback
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec

        class _Loader:

            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                callback(module)

        spec.loader = _Loader()
        return spec

    def invalidate_caches(self):
        pass


def after_import(name, callback):
    """Run ``callback(module)`` once module ``name`` is imported: now if it
    is, else right after whoever imports it does (package installed)."""
    if name in sys.modules:
        callback(sys.modules[name])
        return
    if importlib.util.find_spec(name.split('.')[0]) is None:
        return
    if not any(isinstance(f, _AfterImport) and f.name == name
               for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))


def fix_lvis():
    after_import('lvis.eval', _give_lvis_eval_float)


# ----------------------------------------------------------------------------
def apply():
    """Apply every fix once; later calls do nothing."""
    global _applied
    if _applied:
        return
    fix_mmaction()
    allow_mmengine_checkpoints()
    fix_cpu_distributed()
    fix_http_checkpoint_loading()
    fix_lvis()
    _applied = True


def finish_mmaction_import():
    """Import ``mmaction.models`` (after ``apply``), register placeholders."""
    importlib.import_module('mmaction.models')
    _register_drn_placeholder()

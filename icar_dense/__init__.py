"""icar_dense: iCAR / InMaP vision-language backbones for dense prediction.

``import icar_dense`` applies the compatibility fixes and the mmengine
changes, and registers what serves every scope (hooks, the InMaP test
loop).  It imports none of mmdet, mmseg and mmaction2: a task's modules
(``icar_dense.det``, ``.seg``, ``.action``) are imported the first time a
registry of that task's scope is searched, e.g. when a config with
``default_scope='mmdet'`` builds its model (see :mod:`icar_dense.registry`).
"""
from . import compat

compat.apply()

from .version import __version__  # noqa: E402
from . import engine, inmap  # noqa: E402,F401
from .registry import install_lazy_registration  # noqa: E402

# atomic checkpoints, safe loaders, registry suggestions (mmengine)
engine.safety.apply()
# one summary line instead of a warning per frozen text-encoder tensor
engine.optim_logging.apply()
# a task's modules are imported when a registry of its scope is searched
install_lazy_registration()

_SUBMODULES = ('action', 'apis', 'datasets', 'det', 'evaluation', 'models',
               'seg', 'utils')


def __getattr__(name):
    # ``icar_dense.datasets`` etc. without importing them first
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['__version__', 'compat']

"""icar_dense: iCAR / InMaP vision-language backbones for dense prediction.

``import icar_dense`` applies the fixes of the pinned releases
(:mod:`icar_dense.compat`, the only attributes of other packages it
replaces: ``compat.CHANGED_ATTRIBUTES``) and registers what serves every
scope under new names: the runner, hooks, file backend and optimizer
constructor of :mod:`icar_dense.engine` and the InMaP test loop.  It imports
none of mmdet, mmseg and mmaction2: a task's modules (``icar_dense.det``,
``.seg``, ``.action``) are imported by a config's ``custom_imports``, or
through the ``locations`` of the host's registries when one is first
searched (see :mod:`icar_dense.registry`).
"""
from . import compat

compat.apply()

from .version import __version__  # noqa: E402
from . import engine, inmap  # noqa: E402,F401
from .registry import add_task_locations  # noqa: E402

add_task_locations()

_SUBMODULES = ('action', 'apis', 'datasets', 'det', 'evaluation', 'models',
               'seg', 'utils')


def __getattr__(name):
    # ``icar_dense.datasets`` etc. without importing them first
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['__version__', 'compat']

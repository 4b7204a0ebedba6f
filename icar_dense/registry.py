"""Where icar_dense registers its modules, and when.

Modules shared by all three tasks (the iCAR backbones, the text encoders and
the text classifier) are registered into the ``MODELS`` registry of mmdet,
mmseg and mmaction2 alike, so a config whose ``default_scope`` is any of the
three can name them next to the host library's own modules.  Task-specific
modules (a box head, a decode head, a dataset, a metric) go into their host
library's registry only.

Registration is lazy: ``import icar_dense`` imports none of mmdet, mmseg or
mmaction2.  A task's modules (``icar_dense.det``, ``icar_dense.seg``,
``icar_dense.action``) are imported the first time a registry of that
task's scope is searched -- the way mmengine imports a host library's own
modules through each registry's ``locations``.  So a config with
``default_scope='mmdet'`` finds ``OVShared4Conv1FCBBoxHead`` when its model
is built, and ``import icar_dense`` stays fast.
"""
import importlib
import sys

from mmengine.registry import Registry

#: scope of a host library -> the icar_dense module registering into it
TASK_MODULES = {
    'mmdet': 'icar_dense.det',
    'mmseg': 'icar_dense.seg',
    'mmaction': 'icar_dense.action',
}

#: every shared module, in a registry of its own (no host library needed):
#: where a text classifier built outside any scope finds its text encoder
SHARED_MODELS = Registry('icar_dense shared model', scope='icar_dense')

_shared = []  # (name, class) in definition order
_active = {}  # scope -> the host MODELS registry holding the shared modules


def _host_models_registry(scope):
    module = importlib.import_module(f'{scope}.registry')
    return module.MODELS


def _register(registry, name, cls):
    key = name or cls.__name__
    if registry._module_dict.get(key) is cls:
        return
    registry.register_module(name=name, module=cls)


def register_shared_model(name=None):
    """Class decorator registering a model module in every host registry.

    The class goes into the ``MODELS`` registry of every task already in use
    and into the others when their task is first used.
    """

    def _register_shared(cls):
        _shared.append((name, cls))
        _register(SHARED_MODELS, name, cls)
        for registry in _active.values():
            _register(registry, name, cls)
        return cls

    return _register_shared


def activate_task(scope):
    """Register the shared modules into ``scope``'s MODELS registry.

    Called by ``icar_dense.det`` / ``.seg`` / ``.action`` on import.

    Returns:
        Registry: The host library's ``MODELS`` registry.
    """
    if scope not in TASK_MODULES:
        raise ValueError(f'unknown task scope {scope!r}; one of '
                         f'{sorted(TASK_MODULES)}')
    registry = _active.get(scope)
    if registry is None:
        registry = _host_models_registry(scope)
        _active[scope] = registry
    for name, cls in _shared:
        _register(registry, name, cls)
    return registry


def shared_models_registry(scope=None):
    """The MODELS registry shared modules are built from in ``scope``.

    The host library's registry for a task scope (importing that task), our
    own :data:`SHARED_MODELS` otherwise.
    """
    if scope in TASK_MODULES:
        import_task(scope)
        return activate_task(scope)
    return SHARED_MODELS


def import_task(scope):
    """Import the icar_dense modules of a task scope (no-op for others)."""
    module = TASK_MODULES.get(scope)
    if module is None:
        return None
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded  # imported, or being imported (a nested lookup)
    return importlib.import_module(module)


def install_lazy_registration():
    """Make a search of a host registry import that task's modules first.

    mmengine calls ``Registry.import_from_location`` at the start of every
    ``get`` (hence of every ``build``) to import the modules listed in the
    registry's ``locations``; for a registry of the mmdet, mmseg or mmaction
    scope it now also imports ``icar_dense.det`` / ``.seg`` / ``.action``.
    Idempotent.
    """
    original = Registry.import_from_location
    if getattr(original, '_icar_patched', False):
        return

    def import_from_location(self):
        original(self)
        if self.scope in TASK_MODULES:
            import_task(self.scope)

    import_from_location._icar_patched = True
    import_from_location.__doc__ = original.__doc__
    Registry.import_from_location = import_from_location


__all__ = [
    'SHARED_MODELS', 'TASK_MODULES', 'activate_task', 'import_task',
    'install_lazy_registration', 'register_shared_model',
    'shared_models_registry'
]

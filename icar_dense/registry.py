"""Where icar_dense registers its modules, and when.

Modules shared by all three tasks (the iCAR backbones, the text encoders and
the text classifier, decorated :func:`register_shared_model`) go into
mmengine's root ``MODELS`` registry once.  The ``MODELS`` registries of
mmdet, mmseg and mmaction2 are its children and ``Registry.get`` falls back
to the parent: a config whose ``default_scope`` is any of the three names
them next to the host library's own modules, and every scope finds the same
class.  No host library registers any of their names, so no scope finds
another class under one of them.

Task-specific modules (a box head, a decode head, a dataset, a metric) go
into their host library's registries when ``icar_dense.det`` /
``icar_dense.seg`` / ``icar_dense.action`` is imported.  The configs list
their task's module in ``custom_imports`` (``configs/_base_/
default_runtime_*.py``), the way an OpenMMLab project registers its modules.
Code that builds through a host registry without such a config (a script,
a notebook) finds them too: :func:`add_task_locations` adds the task module
to the ``locations`` of every registry of the host library -- mmengine's own
mechanism for importing a library's modules the first time one of its
registries is searched (mmdet's ``MODELS`` lists ``mmdet.models``).
``import icar_dense`` imports none of mmdet, mmseg and mmaction2.
"""
import importlib

from mmengine.registry import MODELS, Registry

#: scope of a host library -> the icar_dense module registering into it
TASK_MODULES = {
    'mmdet': 'icar_dense.det',
    'mmseg': 'icar_dense.seg',
    'mmaction': 'icar_dense.action',
}


def register_shared_model(name=None):
    """Class decorator registering a model module for every task scope."""

    def _register_shared(cls):
        key = name or cls.__name__
        if MODELS.module_dict.get(key) is not cls:  # not a repeated import
            MODELS.register_module(name=name, module=cls)
        return cls

    return _register_shared


def shared_models_registry(scope=None):
    """The registry that builds shared modules: mmengine's root ``MODELS``.

    Its ``build`` switches to the registry of the current default scope
    (mmdet's, mmseg's, ...), which finds ours through its parent; ``scope``
    is accepted for callers that name it.
    """
    return MODELS


def _locate_task(scope):
    task = TASK_MODULES[scope]

    def add(registry_module):
        searched = False
        for registry in vars(registry_module).values():
            if isinstance(registry, Registry) and registry.scope == scope:
                # mmengine imports a registry's locations on its first
                # search; a new list: registries created without locations
                # share mmengine's default argument
                if task not in registry._locations:
                    registry._locations = [*registry._locations, task]
                searched = searched or registry._imported
        if searched:  # the host was in use before icar_dense: import now
            importlib.import_module(task)

    return add


def add_task_locations():
    """Make each host registry import its icar_dense task module when first
    searched (once the host's ``registry`` module is imported).  Idempotent.
    """
    from .compat import after_import
    for scope in TASK_MODULES:
        after_import(f'{scope}.registry', _locate_task(scope))


__all__ = [
    'TASK_MODULES', 'add_task_locations', 'register_shared_model',
    'shared_models_registry'
]

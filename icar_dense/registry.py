"""Where icar_dense registers its modules.

Modules shared by all three tasks (the iCAR backbones, the text encoders and
the text classifier) are registered into the ``MODELS`` registry of mmdet,
mmseg and mmaction2 alike, so a config whose ``default_scope`` is any of the
three can name them next to the host library's own modules.  Task-specific
modules (a box head, a decode head, a dataset, a metric) go into their host
library's registry only.
"""
from mmaction.registry import MODELS as MMACTION_MODELS
from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

SHARED_MODEL_REGISTRIES = (MMDET_MODELS, MMSEG_MODELS, MMACTION_MODELS)


def register_shared_model(name=None):
    """Class decorator registering a model module in every host registry."""

    def _register(cls):
        for registry in SHARED_MODEL_REGISTRIES:
            registry.register_module(name=name, module=cls)
        return cls

    return _register

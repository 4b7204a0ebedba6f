"""Everything icar_dense registers for action recognition (mmaction scope).

Imported the first time a registry of the host library is searched (it is
in their ``locations``, see :func:`icar_dense.registry.add_task_locations`)
or explicitly: ``import icar_dense.action``.  The shared
modules go into mmengine's root ``MODELS`` (see :mod:`icar_dense.registry`).
The iCAR backbones build on mmdet's and mmaction2's Swin, so mmdet's
models are imported too.
"""
from icar_dense import compat

compat.apply()
compat.finish_mmaction_import()  # mmaction.models with the compat fixes

# shared modules (mmengine's root MODELS): the iCAR Swin backbones, the
# text encoders and classifier
from icar_dense.models.backbones import icar_swin, icar_swin3d  # noqa
from icar_dense.models import text  # noqa: F401,E402

from icar_dense.datasets import (action_zeroshot, transforms,  # noqa
                                 video_validation)
from icar_dense.engine import video_vis  # noqa: F401,E402
from icar_dense.evaluation import action_splits  # noqa: F401,E402
from icar_dense.models.heads import (action_heads,  # noqa: F401,E402
                                     action_recognizer)

"""Everything icar_dense registers for action recognition (mmaction scope).

Imported the first time an mmaction registry is searched (see
:mod:`icar_dense.registry`), or explicitly: ``import icar_dense.action``.
The iCAR backbones build on mmdet's and mmaction2's Swin, so mmdet's
models are imported too.
"""
from icar_dense import compat
from icar_dense.registry import activate_task

compat.apply()
compat.finish_mmaction_import()  # mmaction.models with the compat fixes

# shared modules: the iCAR Swin backbones, the text encoders and classifier
from icar_dense.models.backbones import icar_swin, icar_swin3d  # noqa
from icar_dense.models import text  # noqa: F401,E402

activate_task('mmaction')

from icar_dense.datasets import (action_zeroshot, transforms,  # noqa
                                 video_validation)
from icar_dense.engine import video_vis  # noqa: F401,E402
from icar_dense.evaluation import action_splits  # noqa: F401,E402
from icar_dense.models.heads import (action_heads,  # noqa: F401,E402
                                     action_recognizer)

"""Everything icar_dense registers for detection (mmdet scope).

Imported the first time a registry of the host library is searched (it is
in their ``locations``, see :func:`icar_dense.registry.add_task_locations`)
or explicitly: ``import icar_dense.det``.  The shared
modules go into mmengine's root ``MODELS`` (see :mod:`icar_dense.registry`).
"""

# shared modules (mmengine's root MODELS): the iCAR Swin backbone, the
# text encoders and classifier
from icar_dense.models.backbones import icar_swin  # noqa: F401,E402
from icar_dense.models import text  # noqa: F401,E402

from icar_dense.datasets import det_ov, transforms, validation  # noqa
from icar_dense.engine import det_vis  # noqa: F401,E402
from icar_dense.models import det_tta  # noqa: F401,E402
from icar_dense.evaluation import det_metrics, lvis_metric  # noqa
from icar_dense.models.heads import (det_heads, det_losses,  # noqa
                                     det_roi_heads)

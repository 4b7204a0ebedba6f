"""Everything icar_dense registers for segmentation (mmseg scope).

Imported the first time a registry of the host library is searched (it is
in their ``locations``, see :func:`icar_dense.registry.add_task_locations`)
or explicitly: ``import icar_dense.seg``.  The shared
modules go into mmengine's root ``MODELS`` (see :mod:`icar_dense.registry`).
The 2D iCAR backbone builds on mmdet's Swin, so mmdet's models are
imported too.
"""

# shared modules (mmengine's root MODELS): the iCAR Swin backbone, the
# text encoders and classifier
from icar_dense.models.backbones import icar_swin  # noqa: F401,E402
from icar_dense.models import text  # noqa: F401,E402

from icar_dense.datasets import seg_ov_ade, transforms  # noqa: F401,E402
from icar_dense.engine import seg_vis  # noqa: F401,E402
from icar_dense.evaluation import seg_metrics  # noqa: F401,E402
from icar_dense.models.heads import seg_heads, seg_segmentor  # noqa

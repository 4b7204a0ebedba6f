"""Everything icar_dense registers for segmentation (mmseg scope).

Imported the first time an mmseg registry is searched (see
:mod:`icar_dense.registry`), or explicitly: ``import icar_dense.seg``.
The 2D iCAR backbone builds on mmdet's Swin, so mmdet's models are
imported too.
"""
from icar_dense.registry import activate_task

# shared modules: the iCAR Swin backbone, the text encoders and classifier
from icar_dense.models.backbones import icar_swin  # noqa: F401,E402
from icar_dense.models import text  # noqa: F401,E402

activate_task('mmseg')

from icar_dense.datasets import seg_ov_ade, transforms  # noqa: F401,E402
from icar_dense.engine import seg_vis  # noqa: F401,E402
from icar_dense.evaluation import seg_metrics  # noqa: F401,E402
from icar_dense.models.heads import seg_heads, seg_segmentor  # noqa

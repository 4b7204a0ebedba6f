from .seg_ov_ade import ADE20KSeenDataset  # noqa: F401
from .validation import (AnnotationError, ValidatedCocoDataset,  # noqa: F401
                         ValidatedVideoDataset)
from .det_ov import OVCocoDataset, OVLVISV1Dataset  # noqa: F401,E402
from .action_zeroshot import ZeroShotVideoDataset  # noqa: F401,E402
from .transforms import (CheckSegMap, DataLoadError,  # noqa: F401,E402
                         SafeLoad)

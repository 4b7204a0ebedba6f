from .seg_heads import (ICARFCNHead, ICARUPerHead,  # noqa: F401
                        TextSegHeadMixin)
from .seg_segmentor import ICAREncoderDecoder  # noqa: F401
from .det_heads import OVShared4Conv1FCBBoxHead  # noqa: F401,E402
from .det_losses import SigmoidFederatedLoss  # noqa: F401,E402
from .action_heads import ICARVideoHead  # noqa: F401,E402
from .action_recognizer import ICARRecognizer3D  # noqa: F401,E402
from .det_roi_heads import ICARCascadeRoIHead  # noqa: F401,E402

"""Task heads (imported on first use: each imports its task's host
library)."""
from icar_dense._lazy import lazy_exports

_EXPORTS = {
    'ICARFCNHead': 'seg_heads',
    'ICARUPerHead': 'seg_heads',
    'TextSegHeadMixin': 'seg_heads',
    'ICAREncoderDecoder': 'seg_segmentor',
    'OVShared4Conv1FCBBoxHead': 'det_heads',
    'SigmoidFederatedLoss': 'det_losses',
    'ICARVideoHead': 'action_heads',
    'ICARRecognizer3D': 'action_recognizer',
    'ICARCascadeRoIHead': 'det_roi_heads',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

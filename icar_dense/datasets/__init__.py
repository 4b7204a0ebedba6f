"""Datasets and data transforms (imported on first use: each imports its
task's host library)."""
from icar_dense._lazy import lazy_exports

_EXPORTS = {
    'ADE20KSeenDataset': 'seg_ov_ade',
    'AnnotationError': 'validation',
    'ValidatedCocoDataset': 'det_validation',
    'ValidatedVideoDataset': 'video_validation',
    'OVCocoDataset': 'det_ov',
    'OVLVISV1Dataset': 'det_ov',
    'ZeroShotVideoDataset': 'action_zeroshot',
    'CheckSegMap': 'transforms',
    'DataLoadError': 'transforms',
    'SafeLoad': 'transforms',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

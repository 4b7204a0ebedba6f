"""Metrics and test loops (imported on first use: each imports its task's
host library)."""
from icar_dense._lazy import lazy_exports

_EXPORTS = {
    'SeenUnseenIoUMetric': 'seg_metrics',
    'OVCocoAP50Metric': 'det_metrics',
    'MultiSplitTestLoop': 'action_splits',
    'summarize_splits': 'action_splits',
    'FastLVISMetric': 'lvis_metric',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

from .seg_metrics import SeenUnseenIoUMetric  # noqa: F401
from .det_metrics import OVCocoAP50Metric  # noqa: F401,E402
from .action_splits import MultiSplitTestLoop, summarize_splits  # noqa: F401,E402

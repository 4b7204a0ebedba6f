from .seg_metrics import SeenUnseenIoUMetric  # noqa: F401
from .action_splits import MultiSplitTestLoop, summarize_splits  # noqa: F401,E402

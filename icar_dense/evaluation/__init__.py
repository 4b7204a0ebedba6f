from .seg_metrics import SeenUnseenIoUMetric  # noqa: F401
from .det_metrics import OVCocoAP50Metric  # noqa: F401,E402
from .action_splits import (MultiSplitTestLoop,  # noqa: F401,E402
                            summarize_splits)
from .lvis_metric import FastLVISMetric  # noqa: F401,E402

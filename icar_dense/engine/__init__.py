from .hooks import SaveMetricsHook, write_json_atomic
from .runtime import (adapt_to_machine, dry_run_exit, enable_amp,
                      local_rank_to_env, merge_cfg_options, setup_work_dir,
                      task_scope)

__all__ = [
    'SaveMetricsHook', 'write_json_atomic', 'adapt_to_machine', 'dry_run_exit',
    'enable_amp', 'local_rank_to_env', 'merge_cfg_options', 'setup_work_dir',
    'task_scope'
]
from . import optim_logging, safety  # noqa: F401,E402
from .det_vis import OVDetLocalVisualizer  # noqa: F401,E402
from .video_vis import VideoVisualizationHook  # noqa: F401,E402
from .vocab_eval import VocabularyDataset, VocabularyMetric  # noqa: F401,E402

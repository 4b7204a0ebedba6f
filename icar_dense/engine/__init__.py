from icar_dense._lazy import lazy_exports

from icar_dense.checkpoint.io import write_json_atomic  # (re-export)

from .hooks import SaveMetricsHook
from .runtime import (adapt_to_machine, dry_run_exit, enable_amp,
                      end_distributed, local_rank_to_env, merge_cfg_options,
                      setup_work_dir, task_scope)
# registered components named in configs (runner, file backend, optimizer
# constructor); they replace nothing of mmengine
from .fileio import AtomicLocalBackend  # noqa: E402
from .optim_logging import SummarizedOptimWrapperConstructor  # noqa: E402
from .runner import ICARRunner  # noqa: E402

# visualization of one task: imported with that task (icar_dense.det, ...)
_EXPORTS = {
    'OVDetLocalVisualizer': 'det_vis',
    'SegShowDirHook': 'seg_vis',
    'VideoVisualizationHook': 'video_vis',
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    'AtomicLocalBackend', 'ICARRunner', 'SummarizedOptimWrapperConstructor',
    'SaveMetricsHook', 'write_json_atomic', 'adapt_to_machine', 'dry_run_exit',
    'enable_amp', 'end_distributed', 'local_rank_to_env', 'merge_cfg_options',
    'setup_work_dir', 'task_scope', 'OVDetLocalVisualizer', 'SegShowDirHook',
    'VideoVisualizationHook'
]
from .vocab_eval import VocabularyDataset  # noqa: F401,E402
from .vocab_metric import VocabularyMetric  # noqa: F401,E402

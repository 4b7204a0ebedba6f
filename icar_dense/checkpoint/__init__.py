"""The one place that knows iCAR checkpoints.

* :mod:`.io` -- safe loading, atomic writes;
* :mod:`.layout` -- which layout a state dict has (authors' iCAR, original
  Swin, OpenMMLab / ours) and where the weights sit in a file.
"""
from .errors import CheckpointError, strip_ansi
from .io import (AUTHORS_SAFE_GLOBALS, atomic_write, keep_model_entry,
                 load_checkpoint_file, save_checkpoint_file)
from .layout import (ICAR_PREFIXES, ICAR_TEXT, ICAR_VISUAL_BACKBONE,
                     ICAR_VISUAL_PROJECTOR, detect_layout,
                     find_icar_state_dict, is_authors_training_file,
                     unwrap_state_dict)

__all__ = [
    'AUTHORS_SAFE_GLOBALS', 'CheckpointError', 'ICAR_PREFIXES', 'ICAR_TEXT',
    'ICAR_VISUAL_BACKBONE', 'ICAR_VISUAL_PROJECTOR', 'atomic_write',
    'detect_layout', 'find_icar_state_dict', 'is_authors_training_file',
    'keep_model_entry', 'load_checkpoint_file', 'save_checkpoint_file',
    'strip_ansi', 'unwrap_state_dict'
]

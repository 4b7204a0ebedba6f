from icar_dense.checkpoint import (CheckpointError, convert_icar_state_dict,
                                   detect_layout, load_checkpoint_file,
                                   save_checkpoint_file, unwrap_state_dict)

__all__ = [
    'CheckpointError', 'convert_icar_state_dict', 'detect_layout',
    'load_checkpoint_file', 'save_checkpoint_file', 'unwrap_state_dict'
]

"""The one place that knows iCAR checkpoints: detect, map, filter, load.

* :mod:`.io` -- safe loading (``weights_only`` with the authors'
  ``argparse.Namespace`` allowed; :func:`load_checkpoint` is mmengine's
  ``load_checkpoint`` reading that way), atomic writes;
* :mod:`.layout` -- which layout a state dict has (authors' iCAR, original
  Swin, OpenMMLab / ours) and where the weights sit in a file;
* :mod:`.swin`, :mod:`.swin3d` -- Swin names (authors' -> original ->
  OpenMMLab), tables and position embeddings of another window, 2D -> 3D
  inflation;
* :mod:`.icar` -- the authors' file taken apart, Swin weights of any layout;
* :mod:`.text` -- the text classifier's weights (tower, projections);
* :mod:`.report` -- the one "rebuilt / unused" line every loader writes;
* :mod:`.backbone_filters`, :mod:`.filters` -- timm-style filters: what a
  file gives a backbone, a segmentor, a recognizer, any other model
  (``load_from``), used by the models, ``tools/convert_icar.py`` and the
  demos.

This package imports no model: the models import it.
"""
from .backbone_filters import (filter_swin_state_dict, fit_abs_pos_embed,
                               fit_video_state_dict, inflate_state_dict,
                               load_swin_file, load_swin_state_dict,
                               load_video_swin_file)
from .errors import CheckpointError, strip_ansi
from .filters import (ICARCheckpointMixin, fit_icar_checkpoint,
                      map_icar_to_recognizer, map_icar_to_segmentor,
                      maps_icar_itself)
from .icar import (backbone_state_dict, convert_icar_state_dict,
                   original_swin_2d, split_icar_state_dict)
from .io import (AUTHORS_SAFE_GLOBALS, atomic_write, keep_model_entry,
                 load_checkpoint, load_checkpoint_file, read_checkpoint,
                 save_checkpoint_file, write_json_atomic)
from .layout import (ICAR_PREFIXES, ICAR_TEXT, ICAR_VISUAL_BACKBONE,
                     ICAR_VISUAL_PROJECTOR, detect_layout,
                     find_icar_state_dict, is_authors_training_file,
                     unwrap_state_dict)
from .report import (REBUILT_UNUSED, STAGE_NORM_NOTE, classify_checkpoint_keys,
                     describe_rebuilt_unused, is_rebuilt_or_unused,
                     log_rebuilt_unused, stage_norm_keys, stage_norm_note)
from .swin import (fit_position_tables, infer_swin_arch, resize_pos_embed,
                   swin_official_to_openmmlab, undo_icar_swin_renames)
from .swin3d import (fit_video_position_tables, infer_table_window,
                     inflate_swin2d, interpolate_relative_position_bias)
from .text import (LEGACY_TEXT_KEYS, TextClassifierLoad,
                   convert_icar_text_classifier, filter_text_classifier_state,
                   fit_text_classifier_state, infer_roberta_config,
                   load_text_classifier_state, read_text_classifier_checkpoint,
                   report_text_classifier_load)

__all__ = [
    # io
    'AUTHORS_SAFE_GLOBALS',
    'atomic_write',
    'write_json_atomic',
    'keep_model_entry',
    'load_checkpoint',
    'load_checkpoint_file',
    'read_checkpoint',
    'save_checkpoint_file',
    # errors
    'CheckpointError',
    'strip_ansi',
    # layout
    'ICAR_PREFIXES',
    'ICAR_TEXT',
    'ICAR_VISUAL_BACKBONE',
    'ICAR_VISUAL_PROJECTOR',
    'detect_layout',
    'find_icar_state_dict',
    'is_authors_training_file',
    'unwrap_state_dict',
    # report
    'REBUILT_UNUSED',
    'STAGE_NORM_NOTE',
    'classify_checkpoint_keys',
    'describe_rebuilt_unused',
    'is_rebuilt_or_unused',
    'log_rebuilt_unused',
    'stage_norm_keys',
    'stage_norm_note',
    # swin, swin3d, icar
    'fit_position_tables',
    'infer_swin_arch',
    'resize_pos_embed',
    'swin_official_to_openmmlab',
    'undo_icar_swin_renames',
    'fit_video_position_tables',
    'infer_table_window',
    'inflate_swin2d',
    'interpolate_relative_position_bias',
    'backbone_state_dict',
    'convert_icar_state_dict',
    'original_swin_2d',
    'split_icar_state_dict',
    # text
    'LEGACY_TEXT_KEYS',
    'TextClassifierLoad',
    'convert_icar_text_classifier',
    'filter_text_classifier_state',
    'fit_text_classifier_state',
    'infer_roberta_config',
    'load_text_classifier_state',
    'read_text_classifier_checkpoint',
    'report_text_classifier_load',
    # filters
    'filter_swin_state_dict',
    'fit_abs_pos_embed',
    'fit_video_state_dict',
    'inflate_state_dict',
    'load_swin_file',
    'load_swin_state_dict',
    'load_video_swin_file',
    'ICARCheckpointMixin',
    'fit_icar_checkpoint',
    'map_icar_to_recognizer',
    'map_icar_to_segmentor',
    'maps_icar_itself'
]

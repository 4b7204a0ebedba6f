"""The authors' iCAR file taken apart, and Swin weights from any layout.

* :func:`split_icar_state_dict` -- the official state dict in its three
  parts (Swin in original names, visual projection, text tower) plus the
  keys of the buffers and unused weights it leaves out;
* :func:`convert_icar_state_dict` -- the whole file in our layout
  (``backbone.*`` in OpenMMLab names, ``text_classifier.*``), what
  ``tools/convert_icar.py`` writes;
* :func:`backbone_state_dict` (OpenMMLab names, for the 2D backbone) and
  :func:`original_swin_2d` (original names, for the 3D backbone's
  inflation) -- Swin weights from any supported layout.
"""
import re
from collections import OrderedDict

from .errors import CheckpointError
from .layout import (ICAR_TEXT, ICAR_VISUAL_BACKBONE, ICAR_VISUAL_PROJECTOR,
                     detect_layout)
from .report import log_rebuilt_unused
from .swin import swin_official_to_openmmlab, undo_icar_swin_renames


def split_icar_state_dict(state_dict, source='checkpoint'):
    """Split an official iCAR state dict into its three parts.

    Returns:
        dict: ``swin`` (original Swin names, iCAR renames undone, with
        ``pos_embed`` when the file has it), ``visual_proj`` (Tensor or
        None), ``text`` (keys below ``sentence_model.``: ``backbone.*``
        RoBERTa, ``projector.weight``), ``rebuilt`` (the full keys of the
        dropped buffers and unused weights: ``relative_coords``,
        ``atten_mask_matrix``, RoBERTa ``position_ids`` and ``pooler.*``)
        and ``unexpected`` (keys outside the iCAR prefixes).
    """
    if detect_layout(state_dict, source) != 'icar':
        raise CheckpointError(f'{source}: not an official iCAR checkpoint')
    swin, text = OrderedDict(), OrderedDict()
    visual_proj = None
    unexpected, rebuilt, dropped_swin = [], [], []
    for key, value in state_dict.items():
        if key.startswith(ICAR_VISUAL_BACKBONE):
            swin[key[len(ICAR_VISUAL_BACKBONE):]] = value
        elif key == ICAR_VISUAL_PROJECTOR:
            visual_proj = value
        elif key.startswith(ICAR_TEXT):
            name = key[len(ICAR_TEXT):]
            if re.search(r'(^|\.)(embeddings\.position_ids$|pooler\.)', name):
                rebuilt.append(key)
            else:
                text[name] = value
        else:
            unexpected.append(key)
    swin = undo_icar_swin_renames(swin, dropped_swin)
    rebuilt = [ICAR_VISUAL_BACKBONE + k for k in dropped_swin] + rebuilt
    return dict(swin=swin, visual_proj=visual_proj, text=text,
                rebuilt=rebuilt, unexpected=unexpected)


def convert_icar_state_dict(state_dict, source='checkpoint', rebuilt=None):
    """Official iCAR state dict -> icar_dense layout.

    Args:
        state_dict (dict): ``model`` of the official file.
        source (str): Named in errors.
        rebuilt (list, optional): Receives the source keys of the buffers
            and unused weights that were dropped (see
            :func:`split_icar_state_dict`), for :func:`log_rebuilt_unused`.

    Returns:
        tuple[OrderedDict, list[str]]: the converted state dict with keys
        ``backbone.*`` (OpenMMLab Swin; ``backbone.pos_embed`` kept when the
        file has it: the backbone decides), ``text_classifier.visual_proj.
        weight`` and ``text_classifier.text_encoder.*``; and the source keys
        that were not recognised.
    """
    parts = split_icar_state_dict(state_dict, source)
    if rebuilt is not None:
        rebuilt.extend(parts['rebuilt'])
    converted = OrderedDict()
    if parts['swin']:
        for key, value in swin_official_to_openmmlab(parts['swin']).items():
            converted['backbone.' + key] = value
    if parts['visual_proj'] is not None:
        converted['text_classifier.visual_proj.weight'] = parts['visual_proj']
    for key, value in parts['text'].items():
        converted['text_classifier.text_encoder.' + key] = value
    return converted, parts['unexpected']


def _swin_of_original_file(state_dict, rebuilt):
    """The Swin of an original Swin-Transformer file (``backbone.`` removed,
    the classifier ``head.*`` left out, iCAR renames undone)."""
    swin = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('backbone.'):
            key = key[len('backbone.'):]
        if not key.startswith('head.'):
            swin[key] = value
    return undo_icar_swin_renames(swin, rebuilt)


def _icar_swin(state_dict, source, rebuilt):
    parts = split_icar_state_dict(state_dict, source)
    rebuilt += [k for k in parts['rebuilt']
                if k.startswith(ICAR_VISUAL_BACKBONE)]
    return parts['swin']


def backbone_state_dict(state_dict, source='checkpoint'):
    """OpenMMLab Swin backbone weights from any supported layout.

    The Swin buffers of official iCAR and original Swin files
    (``relative_coords`` / ``relative_position_index``,
    ``atten_mask_matrix`` / ``attn_mask``) are dropped and named in one
    "rebuilt / unused" log line; ``pos_embed`` is kept for the backbone to
    use or drop.
    """
    layout = detect_layout(state_dict, source)
    if layout in ('icar', 'swin_official'):
        rebuilt = []
        if layout == 'icar':
            swin = _icar_swin(state_dict, source, rebuilt)
        else:
            swin = _swin_of_original_file(state_dict, rebuilt)
        try:
            converted = swin_official_to_openmmlab(swin)
        except CheckpointError as err:
            raise CheckpointError(f'{source}: {err}') from None
        log_rebuilt_unused(source, rebuilt)
        return converted
    result = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith('backbone.'):
            result[key[len('backbone.'):]] = value
    if not result:  # a bare backbone state dict
        result = OrderedDict(state_dict)
    return result


def original_swin_2d(state_dict, source, rebuilt=None):
    """Original-Swin-named 2D weights from an iCAR or original Swin dict.

    What the video backbone inflates.  The buffers the 3D model rebuilds
    (``relative_coords`` / ``relative_position_index``,
    ``atten_mask_matrix`` / ``attn_mask``) are dropped; their keys are
    appended to ``rebuilt`` when a list is given.
    """
    layout = detect_layout(state_dict, source)
    if layout == 'icar':
        found = []
        swin = _icar_swin(state_dict, source, found)
        if rebuilt is not None:
            rebuilt += found
        return swin
    if layout == 'openmmlab':
        raise CheckpointError(
            f'{source}: a 2D OpenMMLab (mmdet/mmseg) Swin checkpoint; the '
            'video backbone inflates official iCAR or original '
            'Swin-Transformer checkpoints (keys layers.N.blocks...)')
    return _swin_of_original_file(state_dict, rebuilt)

"""Swin weights: the authors' names -> original Swin -> OpenMMLab, 2D tables.

* :func:`undo_icar_swin_renames` -- iCAR's renames of original
  Swin-Transformer keys undone, the buffers the models rebuild dropped;
* :func:`swin_official_to_openmmlab` -- mmdet's own ``swin_converter``
  (stages, w_msa, ffn, patch-merging channel order), final ``norm`` to
  ``norm{last}``;
* :func:`infer_swin_arch` -- the hyper-parameters of an OpenMMLab Swin
  state dict;
* :func:`fit_position_tables` / :func:`resize_pos_embed` -- 2D relative
  position tables and the absolute position embedding resized to another
  window / patch grid.

The 3D (video) counterparts are in :mod:`.swin3d`.
"""
import logging
import re
from collections import OrderedDict

import torch.nn.functional as F

from .errors import CheckpointError

# iCAR's renames of original Swin-Transformer keys.
_ICAR_SWIN_RENAMES = (
    ('rel_pos_embed_table', 'relative_position_bias_table'),
    ('.channel_reduction.', '.reduction.'),
)
_SWIN_BUFFERS = re.compile(r'(^|\.)(relative_coords|relative_position_index|'
                           r'atten_mask_matrix|attn_mask)$')


def undo_icar_swin_renames(state_dict, rebuilt=None):
    """iCAR Swin keys -> original Swin-Transformer keys.

    The buffers ``relative_coords`` (``relative_position_index``) and
    ``atten_mask_matrix`` (``attn_mask``) are dropped: the model rebuilds
    them.  Their keys are appended to ``rebuilt`` when a list is given.
    """
    renamed = OrderedDict()
    for key, value in state_dict.items():
        if _SWIN_BUFFERS.search(key):
            if rebuilt is not None:
                rebuilt.append(key)
            continue
        for old, new in _ICAR_SWIN_RENAMES:
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def swin_official_to_openmmlab(state_dict):
    """Original Swin-Transformer names -> mmdet/mmseg ``SwinTransformer``.

    Uses mmdet's own converter (stages, w_msa, ffn, patch-merging channel
    order); the final ``norm`` becomes ``norm3``, the output norm of the last
    stage in the OpenMMLab model.
    """
    from mmdet.models.backbones.swin import swin_converter
    stage_ids = [
        int(m.group(1)) for m in (re.match(r'layers\.(\d+)\.', k)
                                  for k in state_dict) if m
    ]
    if not stage_ids:
        raise CheckpointError(
            'no Swin stage weights (layers.N.* keys) to convert; found e.g. '
            f'{list(state_dict)[:3]}: is it a text-only checkpoint?')
    num_stages = 1 + max(stage_ids)
    converted = swin_converter(state_dict)
    result = OrderedDict()
    for key, value in converted.items():
        key = key[len('backbone.'):]
        if key.startswith('norm.'):
            key = f'norm{num_stages - 1}.' + key[len('norm.'):]
        result[key] = value
    return result


def infer_swin_arch(swin_state_dict):
    """Swin hyper-parameters read off an OpenMMLab-layout state dict.

    Returns:
        dict: ``embed_dims``, ``depths``, ``num_heads``, ``window_size``.
    """
    sd = swin_state_dict
    if 'patch_embed.projection.weight' not in sd:
        raise CheckpointError('cannot infer the Swin architecture: no '
                              "'patch_embed.projection.weight' key")
    embed_dims = sd['patch_embed.projection.weight'].shape[0]
    depths, heads = [], []
    window = None
    stage = 0
    while any(k.startswith(f'stages.{stage}.') for k in sd):
        blocks = {int(m.group(1)) for m in (
            re.match(rf'stages\.{stage}\.blocks\.(\d+)\.', k) for k in sd)
            if m}
        depths.append(len(blocks))
        table = sd[f'stages.{stage}.blocks.0.attn.w_msa.'
                   'relative_position_bias_table']
        heads.append(table.shape[1])
        window = (int(round(table.shape[0]**0.5)) + 1) // 2
        stage += 1
    return dict(embed_dims=int(embed_dims), depths=tuple(depths),
                num_heads=tuple(heads), window_size=int(window))


def fit_position_tables(state_dict, own_state, logger):
    """Bicubic resize of 2D relative position tables when windows differ.

    Args:
        state_dict (dict): OpenMMLab Swin weights, edited in place:
            ``relative_position_index`` buffers are dropped (they depend
            only on the window, the model rebuilds them), a table of another
            number of heads is dropped with a warning.
        own_state (dict): The receiving model's ``state_dict()``.
        logger: Where the warnings go.

    Returns:
        dict: ``state_dict``.
    """
    from mmengine.logging import print_log
    for key in [k for k in state_dict if 'relative_position_index' in k]:
        state_dict.pop(key)
    for key in [k for k in state_dict
                if 'relative_position_bias_table' in k]:
        if key not in own_state:
            continue
        table = state_dict[key]
        length, heads = table.shape
        new_length, new_heads = own_state[key].shape
        if heads != new_heads:
            print_log(f'{key}: {heads} heads in the checkpoint, '
                      f'{new_heads} in the model: not loaded',
                      logger=logger, level=logging.WARNING)
            state_dict.pop(key)
        elif length != new_length:
            side, new_side = int(length**0.5), int(new_length**0.5)
            state_dict[key] = F.interpolate(
                table.permute(1, 0).reshape(1, heads, side, side),
                size=(new_side, new_side),
                mode='bicubic').reshape(heads, new_length).permute(
                    1, 0).contiguous()
    return state_dict


def resize_pos_embed(pos, src_grid, dst_grid):
    """Bicubic resize of a (1, h*w, C) position embedding to another grid.

    Bicubic with ``align_corners=False`` as Swin-Transformer and mmseg resize
    Swin's absolute position embedding.
    """
    channels = pos.shape[-1]
    grid = pos.reshape(1, src_grid[0], src_grid[1],
                       channels).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(), size=tuple(dst_grid), mode='bicubic',
        align_corners=False).to(pos.dtype)
    return grid.flatten(2).transpose(1, 2)

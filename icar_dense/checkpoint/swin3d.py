"""Video Swin weights: 2D -> 3D inflation and tables of another window.

* :func:`inflate_swin2d` -- original-Swin-named 2D weights to the tensors of
  an mmaction2 ``SwinTransformer3D``, computed exactly as mmaction2's
  ``SwinTransformer3D.inflate_weights`` does (patch embedding repeated over
  time and divided by the temporal patch size, the 2D relative position
  bias table resized bicubically in space and repeated for every temporal
  offset, the final ``norm`` as ``norm3``), but from a state dict read by
  the safe loader instead of a file mmaction reads itself;
* :func:`interpolate_relative_position_bias`, :func:`infer_table_window`,
  :func:`fit_video_position_tables` -- a 3D table of another window
  resized (linear in time, bicubic in space).
"""
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .errors import CheckpointError

TABLE = 'relative_position_bias_table'
INDEX = 'relative_position_index'


def _window_table_shape(window: Sequence[int]) -> Tuple[int, int, int]:
    return tuple(2 * int(w) - 1 for w in window)


def interpolate_relative_position_bias(
        table: torch.Tensor, src_window: Sequence[int],
        dst_window: Sequence[int]) -> torch.Tensor:
    """Resize a Video Swin relative position bias table to another window.

    The table holds one bias per head for every relative offset
    ``(dt, dy, dx)`` with ``|dt| < Wd``, ``|dy| < Wh``, ``|dx| < Ww``, laid out
    time-major as in ``WindowAttention3D``: shape
    ``((2Wd-1)(2Wh-1)(2Ww-1), num_heads)``.

    * Time: linear interpolation over the ``2Wd-1`` temporal offsets with
      ``align_corners=True``: offset 0 stays offset 0 and the largest
      offsets map onto each other, intermediate offsets are scaled by
      ``(Wd_src-1)/(Wd_dst-1)``.  A table that does not depend on ``dt``
      (e.g. an inflated 2D table) stays exactly the same per ``dt``.
    * Space: bicubic, as Swin and mmaction resize 2D tables.

    Args:
        table (Tensor): ``(prod(2*src_window-1), num_heads)``.
        src_window (Sequence[int]): ``(Wd, Wh, Ww)`` the table was made for.
        dst_window (Sequence[int]): the window of the target model.

    Returns:
        Tensor: ``(prod(2*dst_window-1), num_heads)``.
    """
    src_t, src_h, src_w = _window_table_shape(src_window)
    dst_t, dst_h, dst_w = _window_table_shape(dst_window)
    length, heads = table.shape
    if length != src_t * src_h * src_w:
        raise ValueError(
            f'relative position bias table of {length} rows does not fit '
            f'the window {tuple(src_window)} ({src_t}x{src_h}x{src_w} '
            'offsets)')
    dtype = table.dtype
    grid = table.float().t().reshape(heads, src_t, src_h * src_w)
    if dst_t != src_t:
        if dst_t == 1:  # only offset 0 remains
            grid = grid[:, (src_t - 1) // 2:(src_t - 1) // 2 + 1]
        else:
            grid = F.interpolate(
                grid.permute(0, 2, 1).reshape(1, heads * src_h * src_w, src_t),
                size=dst_t,
                mode='linear',
                align_corners=True).reshape(heads, src_h * src_w,
                                            dst_t).permute(0, 2, 1)
    grid = grid.reshape(heads * dst_t, src_h, src_w)
    if (dst_h, dst_w) != (src_h, src_w):
        grid = F.interpolate(
            grid.unsqueeze(0),
            size=(dst_h, dst_w),
            mode='bicubic',
            align_corners=False).squeeze(0)
    return grid.reshape(heads,
                        dst_t * dst_h * dst_w).t().contiguous().to(dtype)


def infer_table_window(
        length: int,
        index_shape: Optional[Sequence[int]],
        spatial_hint: Sequence[int],
        key: str = 'relative_position_bias_table') -> Tuple[int, int, int]:
    """The ``(Wd, Wh, Ww)`` a 3D relative position bias table was made for.

    The spatial window is assumed to be the model's (``spatial_hint``) when
    that explains the table size; otherwise square spatial windows are
    searched, disambiguated by the checkpoint's ``relative_position_index``
    (``N x N`` with ``N = Wd*Wh*Ww``) when present.
    """
    num_tokens = index_shape[0] if index_shape else None
    hint_h, hint_w = spatial_hint
    area = (2 * hint_h - 1) * (2 * hint_w - 1)
    if length % area == 0 and (length // area) % 2 == 1:
        wd = (length // area + 1) // 2
        if num_tokens is None or num_tokens == wd * hint_h * hint_w:
            return wd, hint_h, hint_w
    candidates = []
    for ws in range(1, 65):
        side = (2 * ws - 1)**2
        if length % side or (length // side) % 2 == 0:
            continue
        wd = (length // side + 1) // 2
        if num_tokens is None or num_tokens == wd * ws * ws:
            candidates.append((wd, ws, ws))
    if len(candidates) == 1:
        return candidates[0]
    raise CheckpointError(
        f'{key}: cannot tell which (temporal, height, width) window a table '
        f'of {length} rows was made for (candidates: {candidates or "none"})'
        '; keep the relative_position_index buffers in the checkpoint or use '
        f'the spatial window {tuple(spatial_hint)} of the model')


def fit_video_position_tables(model, state_dict,
                              prefix: str = '') -> Dict[str, tuple]:
    """Resize the 3D bias tables of another window in place.

    ``relative_position_index`` buffers are replaced by ``model``'s own
    (they depend only on the window).  Returns ``{key: (src_window,
    dst_window)}`` for every table that was resized.
    """
    own = model.state_dict()
    resized = {}
    for key in [
            k for k in state_dict
            if k.startswith(prefix) and k.endswith(TABLE)
    ]:
        name = key[len(prefix):]
        if name not in own:
            continue
        table, target = state_dict[key], own[name]
        if table.shape == target.shape:
            continue
        if table.dim() != 2 or table.shape[1] != target.shape[1]:
            raise CheckpointError(
                f'{key}: checkpoint table {tuple(table.shape)} vs model '
                f'{tuple(target.shape)}: a different number of heads')
        index_key = key[:-len(TABLE)] + INDEX
        index = state_dict.get(index_key)
        src = infer_table_window(
            table.shape[0],
            tuple(index.shape) if index is not None else None,
            model.window_size[1:], key)
        state_dict[key] = interpolate_relative_position_bias(
            table, src, model.window_size)
        resized[key] = (src, tuple(model.window_size))
    for key in [
            k for k in state_dict
            if k.startswith(prefix) and k.endswith(INDEX)
    ]:
        name = key[len(prefix):]
        if name in own:
            state_dict[key] = own[name].clone()
    return resized


def _check_patch_embedding(model, state_dict):
    own = model.state_dict()['patch_embed.proj.weight']
    name = type(model).__name__
    if 'patch_embed.proj.weight' not in state_dict:
        raise CheckpointError(
            f'{name}: the 2D checkpoint has no '
            "'patch_embed.proj.weight': not a Swin image encoder; first "
            f'keys {list(state_dict)[:5]}')
    weight = state_dict['patch_embed.proj.weight']
    if tuple(weight.shape[:2]) != tuple(own.shape[:2]):
        raise CheckpointError(
            f'{name}: the checkpoint patch embedding is '
            f'{tuple(weight.shape)}, the model\'s {tuple(own.shape)}: a '
            'different Swin width; set arch/embed_dims to match the '
            'checkpoint')


def _inflate_table(table, current, window, key, logger):
    """mmaction's inflation of one 2D table: bicubic to the spatial window
    if it differs, then repeated for the ``2*Wd-1`` temporal offsets."""
    length, heads = table.size()
    new_heads = current.size(1)
    new_length = (2 * window[1] - 1) * (2 * window[2] - 1)
    if heads != new_heads:
        logger.warning(f'Error in loading {key}, passing')
    elif length != new_length:
        side = int(length**0.5)
        table = F.interpolate(
            table.permute(1, 0).view(1, heads, side, side),
            size=(2 * window[1] - 1, 2 * window[2] - 1),
            mode='bicubic').view(new_heads, new_length).permute(1, 0)
    return table.repeat(2 * window[0] - 1, 1)


def inflate_swin2d(model, state_dict, logger) -> 'OrderedDict[str, object]':
    """2D Swin weights (original names) -> ``model``'s 3D tensors.

    The state dict mmaction2's ``SwinTransformer3D.inflate_weights`` loads
    into ``model`` (see the module docstring), for the keys ``model`` has
    (and the final ``norm``, which becomes ``norm3`` where the model has
    one, as in mmaction).  ``relative_position_index`` / ``attn_mask``
    buffers are left out: the model rebuilds them.

    Args:
        model (SwinTransformer3D): The receiving model (its window, patch
            size and tensors' shapes).
        state_dict (dict): Original-Swin-named 2D weights.
        logger: Receives mmaction's warning for a table of another number of
            heads (that table then fails to load, as in mmaction).

    Raises:
        CheckpointError: no 2D patch embedding, or one of another width.
    """
    _check_patch_embedding(model, state_dict)
    own = model.state_dict()
    inflated = OrderedDict(
        (k, v) for k, v in state_dict.items()
        if (k in own or k in ('norm.weight', 'norm.bias'))
        and INDEX not in k and 'attn_mask' not in k)
    depth = model.patch_size[0]
    inflated['patch_embed.proj.weight'] = inflated[
        'patch_embed.proj.weight'].unsqueeze(2).repeat(1, 1, depth, 1,
                                                       1) / depth
    for key in [k for k in inflated if TABLE in k]:
        inflated[key] = _inflate_table(inflated[key], own[key],
                                       model.window_size, key, logger)
    if hasattr(model, 'norm3'):
        inflated['norm3.weight'] = inflated.pop('norm.weight')
        inflated['norm3.bias'] = inflated.pop('norm.bias')
    return inflated

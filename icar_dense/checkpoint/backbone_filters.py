"""Checkpoint filters of the Swin backbones (timm's ``checkpoint_filter_fn``).

Each takes what a file holds and the receiving backbone and returns (or
loads) what fits it; the backbones' ``init_weights`` and load hooks only
call them:

* 2D (``ICARSwinTransformer``): :func:`filter_swin_state_dict` (any layout
  to OpenMMLab names, tables resized to the window, ``pos_embed`` used or
  dropped), :func:`load_swin_state_dict` (the load, a size mismatch named
  with the fix, one log line);
* 3D (``ICARSwinTransformer3D``): :func:`inflate_state_dict` (2D weights
  inflated, in the model's keys), :func:`fit_video_state_dict` (what every
  load into the video backbone passes through) and
  :func:`load_video_swin_file` (``init_weights`` from a 2D or 3D file).
"""
import logging
import math
import re
from collections import OrderedDict

from .errors import CheckpointError
from .icar import backbone_state_dict, original_swin_2d
from .io import load_checkpoint_file
from .layout import unwrap_state_dict
from .report import log_rebuilt_unused
from .swin import fit_position_tables, resize_pos_embed
from .swin3d import INDEX, fit_video_position_tables, inflate_swin2d


def _print_log(msg, logger, level=logging.INFO):
    from mmengine.logging import print_log
    print_log(msg, logger=logger, level=level)


def _current_logger():
    from mmengine.logging import MMLogger
    return MMLogger.get_current_instance()


# ----------------------------------------------------------------------------
# 2D
# ----------------------------------------------------------------------------
def fit_abs_pos_embed(model, state_dict, path, logger):
    """Use or drop the checkpoint's absolute position embedding.

    iCAR stores it as ``pos_embed`` (1, h*w, C), OpenMMLab Swin as
    ``absolute_pos_embed``; ``model`` (an ``ICARSwinTransformer``) uses it
    when ``use_abs_pos_embed=True``, resized to its ``pos_embed_grid``.
    Edits ``state_dict`` in place.
    """
    name = type(model).__name__
    pos = state_dict.pop('pos_embed', None)
    if 'absolute_pos_embed' in state_dict:
        pos = state_dict.pop('absolute_pos_embed')
    if not model.use_abs_pos_embed:
        if pos is not None:
            _print_log(
                f'{name}: pos_embed {tuple(pos.shape)} of {path} not '
                'used (use_abs_pos_embed=False, for dense inputs, as the '
                "authors' detection/segmentation/video code drops it; "
                'zero-shot classification at the pre-training size sets '
                'use_abs_pos_embed=True)', logger)
        return
    if pos is None:
        _print_log(
            f'{name}: use_abs_pos_embed=True but {path} has no pos_embed'
            ' (a checkpoint trained without it): the embedding stays 0',
            logger, logging.WARNING)
        return
    if pos.dim() == 4:  # (1, C, h, w), older OpenMMLab checkpoints
        pos = pos.flatten(2).transpose(1, 2)
    own, grid = model.absolute_pos_embed, model.pos_embed_grid
    side = math.isqrt(pos.shape[1])
    if pos.shape[-1] != own.shape[-1] or (
            pos.shape[1] != own.shape[1] and side * side != pos.shape[1]):
        raise CheckpointError(
            f'{path}: pos_embed {tuple(pos.shape)} does not fit this '
            f'model\'s {tuple(own.shape)} (grid {grid}); '
            'set pretrain_img_size to the size the checkpoint was '
            'trained at, or use_abs_pos_embed=False')
    if pos.shape[1] != own.shape[1]:  # a square grid of another size
        pos = resize_pos_embed(pos, (side, side), grid)
    state_dict['absolute_pos_embed'] = pos
    _print_log(
        f'{name}: pos_embed of {path} used as the absolute position '
        f'embedding (grid {grid[0]}x{grid[1]}, interpolated for other '
        'input grids)', logger)


def filter_swin_state_dict(state_dict, model, path, logger=None):
    """A checkpoint's state dict (any layout) ready for the 2D ``model``.

    Raises:
        CheckpointError: no Swin weights after conversion, or a
            ``pos_embed`` of another width.
    """
    logger = logger or _current_logger()
    state_dict = backbone_state_dict(state_dict, path)
    if not any(k.startswith('stages.') for k in state_dict):
        raise CheckpointError(
            f'{path}: no Swin backbone weights (no stages.* keys after '
            f'conversion; found e.g. {list(state_dict)[:3]}): is it a '
            'text-only or non-Swin checkpoint?')
    state_dict = fit_position_tables(state_dict, model.state_dict(), logger)
    fit_abs_pos_embed(model, state_dict, path, logger)
    return state_dict


def load_swin_state_dict(model, state_dict, path, logger=None):
    """Load filtered weights into the 2D ``model`` (non-strict), one line.

    Raises:
        CheckpointError: tensors of another size (another architecture),
            naming the first and ``arch``.
    """
    logger = logger or _current_logger()
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:
        mismatches = [line.strip() for line in str(err).splitlines()
                      if 'size mismatch' in line]
        if not mismatches:
            raise
        raise CheckpointError(
            f'{path}: its Swin weights do not fit this '
            f'{type(model).__name__} (arch={model.arch!r}); '
            f'{len(mismatches)} tensors differ, e.g. {mismatches[0]} '
            'Set `arch` to the checkpoint\'s architecture.') from None
    # relative_position_index buffers are rebuilt, not loaded
    missing = [k for k in missing if 'relative_position_index' not in k]
    matched = len(state_dict) - len(unexpected)
    _print_log(
        f'{type(model).__name__}: loaded {matched} tensors from {path}; '
        f'missing {len(missing)}: {missing[:8]}; unexpected '
        f'{len(unexpected)}: {unexpected[:8]}', logger)


def load_swin_file(model, path, logger=None):
    """``init_weights`` of the 2D backbone from the file ``path``."""
    logger = logger or _current_logger()
    state_dict = unwrap_state_dict(load_checkpoint_file(path), path)
    state_dict = filter_swin_state_dict(state_dict, model, path, logger)
    load_swin_state_dict(model, state_dict, path, logger)


# ----------------------------------------------------------------------------
# 3D
# ----------------------------------------------------------------------------
def _strip_prefix(state_dict, prefix):
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def inflate_state_dict(model, state_dict, logger=None):
    """2D weights (original Swin names) -> the 3D ``model``'s tensors.

    The inflated tensors of the keys the model has, and the model's own
    ``relative_position_index`` buffers (rebuilt from its window), so that
    no loader reports them missing.
    """
    inflated = inflate_swin2d(model, state_dict, logger or _current_logger())
    own = model.state_dict()
    result = OrderedDict((k, v) for k, v in inflated.items() if k in own)
    for key, value in own.items():
        if INDEX in key:
            result[key] = value.clone()
    return result


def fit_video_state_dict(model, state_dict, prefix=''):
    """Adapt a state dict loaded into the video ``model``, in place.

    2D patch embeddings (an image checkpoint given to a video model) are
    inflated; 3D tables of another window are interpolated (one log line
    each).  The video backbone runs it as a ``load_state_dict`` pre-hook.
    """
    name = type(model).__name__
    patch = state_dict.get(prefix + 'patch_embed.proj.weight')
    if patch is not None and patch.dim() == 4:
        sd2d = _strip_prefix(state_dict, prefix)
        for key in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[key]
        for key, value in inflate_state_dict(model, sd2d).items():
            state_dict[prefix + key] = value
        _print_log(f'{name}: inflated 2D Swin weights found under '
                   f'{prefix!r} to 3D', 'current')
        return
    resized = fit_video_position_tables(model, state_dict, prefix)
    if resized:
        src, dst = next(iter(resized.values()))
        _print_log(
            f'{name}: {len(resized)} relative position bias tables '
            f'interpolated from window {src} to {dst}', 'current')


def _inflate_file(model, state_dict, path, logger):
    """Inflate a 2D file into ``model``, then two lines: what was inflated
    (with any truly missing / unexpected key) and the "rebuilt / unused"
    buffers (the file's and the model's index buffers) and ``pos_embed``."""
    name = type(model).__name__
    rebuilt = []
    sd2d = original_swin_2d(state_dict, path, rebuilt)
    # the authors' Video Swin has no absolute position embedding (its
    # inflate_weights leaves pos_embed to strict=False); neither has ours
    if sd2d.pop('pos_embed', None) is not None:
        rebuilt.append('pos_embed')
    own = model.state_dict()
    expected = {k for k in own if INDEX not in k}
    last = model.num_layers - 1
    given = {re.sub(r'^norm\.', f'norm{last}.', k) for k in sd2d}
    result = model.load_state_dict(
        inflate_swin2d(model, sd2d, logger), strict=False)
    if not any(k.endswith(('relative_coords', INDEX)) for k in rebuilt):
        # the file had no index buffers: name the model's, rebuilt
        rebuilt += [k for k in result.missing_keys if INDEX in k]
    missing = sorted(expected - given)
    unexpected = sorted(given - set(own))
    _print_log(
        f'{name}: inflated the 2D Swin of {path} (temporal patch '
        f'{model.patch_size[0]}, window {tuple(model.window_size)}); '
        f'missing {len(missing)}: {missing[:8]}; unexpected '
        f'{len(unexpected)}: {unexpected[:8]}', logger)
    log_rebuilt_unused(f'{name} ({path})', rebuilt, logger=logger)


def _load_3d(model, state_dict, path, logger):
    missing, unexpected = model.load_state_dict(
        OrderedDict(state_dict), strict=False)
    missing = [k for k in missing if INDEX not in k]
    _print_log(
        f'{type(model).__name__}: loaded 3D weights from {path}; missing '
        f'{len(missing)}: {missing[:8]}; unexpected {len(unexpected)}: '
        f'{unexpected[:8]}', logger)


def load_video_swin_file(model, path, prefix=None, logger=None):
    """``init_weights`` of the video backbone from the file ``path``.

    A 3D file (Video Swin, or a recognizer's ``backbone.*``) is loaded (its
    tables fitted to the window by the model's pre-hook); a 2D one
    (official iCAR or original Swin) is inflated.  ``prefix`` selects the
    keys of an ``init_cfg`` with ``prefix``.
    """
    logger = logger or _current_logger()
    state_dict = unwrap_state_dict(load_checkpoint_file(path), path)
    if prefix:
        state_dict = _strip_prefix(state_dict, prefix)
        if not state_dict:
            raise CheckpointError(
                f'{path}: no keys start with the init_cfg prefix '
                f'{prefix!r}')
    elif any(k.startswith('backbone.') for k in state_dict):
        state_dict = _strip_prefix(state_dict, 'backbone.')
    patch = state_dict.get('patch_embed.proj.weight')
    if patch is not None and patch.dim() == 5:
        _load_3d(model, state_dict, path, logger)
    else:
        _inflate_file(model, state_dict, path, logger)

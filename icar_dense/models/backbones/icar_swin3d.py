"""iCAR's Swin image encoder inflated to a Video Swin Transformer.

:class:`ICARSwinTransformer3D` is a thin subclass of mmaction2's
``SwinTransformer3D`` (original Swin key names, which is also what iCAR's
visual backbone uses once its own renames are undone).  It adds

* initialisation from an **official iCAR checkpoint** (its renames undone by
  :func:`icar_dense.utils.checkpoint.split_icar_state_dict`), an original
  2D Swin checkpoint or a 3D (Video Swin / icar_dense recognizer)
  checkpoint, always through the safe ``weights_only`` loader;
* 2D -> 3D inflation done by mmaction2's own ``inflate_weights`` (patch
  embedding repeated over time and divided by the temporal patch size, the
  2D relative position bias table resized bicubically in space and repeated
  for every temporal offset), fed with the converted state dict instead of
  a file read with an unrestricted unpickler;
* interpolation of the relative position bias table along **time** (and
  bicubically in space) when a 3D checkpoint was trained with another window
  than the model's, both in ``init_weights`` and whenever a state dict is
  loaded into the model (``load_state_dict``, ``Runner.load_checkpoint``,
  ``tools/test.py``), so a model trained with temporal window 8 can be
  tested with window 4 or 16.

Its forward is already the authors' (weiyx16/Video-Swin-Transformer, whose
backbone is Video Swin's): per axis, a feature map no larger than the window
is attended as one window, without shift along that axis
(``get_window_size``), e.g. along time for short clips and in space for the
7x7 last stage at 224 px.  iCAR's absolute ``pos_embed`` has no place in
Video Swin and is dropped with one log line, as the authors' code drops it.
"""
import contextlib
import re
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from icar_dense import compat

compat.apply()
compat.finish_mmaction_import()  # mmaction.models needs the compat fixes

from mmaction.models.backbones import swin as mmaction_swin  # noqa: E402
from mmaction.models.backbones.swin import SwinTransformer3D  # noqa: E402
from mmaction.registry import MODELS  # noqa: E402
from mmengine.logging import MMLogger, print_log  # noqa: E402
from mmengine.model import BaseModule  # noqa: E402

from icar_dense.utils.checkpoint import (  # noqa: E402
    ICAR_VISUAL_BACKBONE, CheckpointError, detect_layout,
    load_checkpoint_file, log_rebuilt_unused, split_icar_state_dict,
    undo_icar_swin_renames, unwrap_state_dict)

_TABLE = 'relative_position_bias_table'
_INDEX = 'relative_position_index'


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


def _original_swin_2d(state_dict, source, rebuilt=None):
    """Original-Swin-named 2D weights from an iCAR or original Swin dict.

    The buffers the 3D model rebuilds (``relative_coords`` /
    ``relative_position_index``, ``atten_mask_matrix`` / ``attn_mask``) are
    dropped; their keys are appended to ``rebuilt`` when a list is given.
    """
    layout = detect_layout(state_dict, source)
    if layout == 'icar':
        parts = split_icar_state_dict(state_dict, source)
        if rebuilt is not None:
            rebuilt += [k for k in parts['rebuilt']
                        if k.startswith(ICAR_VISUAL_BACKBONE)]
        return parts['swin']
    if layout == 'openmmlab':
        raise CheckpointError(
            f'{source}: a 2D OpenMMLab (mmdet/mmseg) Swin checkpoint; the '
            'video backbone inflates official iCAR or original '
            'Swin-Transformer checkpoints (keys layers.N.blocks...)')
    swin = OrderedDict(
        (k[len('backbone.'):] if k.startswith('backbone.') else k, v)
        for k, v in state_dict.items() if not k.startswith('head.'))
    return undo_icar_swin_renames(swin, rebuilt)


def _take_pos_embed(state_dict, rebuilt):
    """Drop iCAR's absolute position embedding into ``rebuilt``.

    The authors' Video Swin has no absolute position embedding (its
    ``inflate_weights`` leaves ``pos_embed`` to ``strict=False``); neither
    has ours.  It is named in the "rebuilt / unused" line.
    """
    if state_dict.pop('pos_embed', None) is not None:
        rebuilt.append('pos_embed')


class _LoadResultCatcher:
    """The logger handed to mmaction's ``inflate_weights``.

    mmaction ends its inflation with ``logger.info(self.load_state_dict(
    ...))``, which lists the rebuilt ``relative_position_index`` buffers as
    missing keys.  This logger keeps that result (``result``) for the
    caller to report properly; every other message goes to ``logger``.
    """

    def __init__(self, logger):
        self._logger = logger
        self.result = None

    def info(self, msg, *args, **kwargs):
        if hasattr(msg, 'missing_keys') and hasattr(msg, 'unexpected_keys'):
            self.result = msg
            return
        self._logger.info(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)


def _strip_prefix(state_dict, prefix):
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


@contextlib.contextmanager
def _serve_to_mmaction_inflation(state_dict):
    """Make mmaction's ``inflate_weights`` read ``{'model': state_dict}``.

    mmaction's method reads ``self.pretrained`` with mmengine's unrestricted
    ``_load_checkpoint``; we hand it a dict read safely and converted
    instead, and keep the rest of its inflation logic unchanged.
    """
    original = mmaction_swin._load_checkpoint

    def serve(*args, **kwargs):
        return dict(model=state_dict)

    mmaction_swin._load_checkpoint = serve
    try:
        yield
    finally:
        mmaction_swin._load_checkpoint = original


@MODELS.register_module()
class ICARSwinTransformer3D(SwinTransformer3D):
    """Video Swin Transformer initialised from an iCAR image encoder.

    Args:
        arch (str | dict | None): ``'tiny'``, ``'small'``, ``'base'``,
            ``'large'``, a dict of ``embed_dims``/``depths``/``num_heads``,
            or None to give those three as keyword arguments.  Explicit
            ``embed_dims``/``depths``/``num_heads`` override a preset.
        pretrained (str, optional): checkpoint to start from: an official
            iCAR checkpoint, an original 2D Swin checkpoint (both inflated)
            or a 3D checkpoint (Video Swin, or an icar_dense/mmaction
            recognizer whose ``backbone.*`` keys are used).
        pretrained2d (bool): kept for mmaction config compatibility; whether
            ``pretrained`` is 2D or 3D is read off its patch embedding.
        init_cfg (dict | list[dict], optional): as mmaction's; a
            ``dict(type='Pretrained', checkpoint=PATH, prefix=None)`` is
            handled like ``pretrained`` (through the safe loader).
        **kwargs: the other arguments of ``SwinTransformer3D``
            (``patch_size``, ``window_size``, ``drop_path_rate``, ...).
    """

    def __init__(self,
                 arch='base',
                 pretrained: Optional[str] = None,
                 pretrained2d: bool = True,
                 embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        explicit = dict(
            embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        explicit = {k: v for k, v in explicit.items() if v is not None}
        if arch is None:
            missing = {'embed_dims', 'depths', 'num_heads'} - set(explicit)
            if missing:
                raise ValueError(
                    f'{type(self).__name__}: arch=None needs embed_dims, '
                    f'depths and num_heads; missing {sorted(missing)}')
            arch = {}
        elif isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise KeyError(
                    f'{type(self).__name__}: unknown arch {arch!r}; choose '
                    f"from {sorted(set(self.arch_zoo))} or give "
                    'embed_dims/depths/num_heads')
            arch = dict(self.arch_zoo[arch.lower()])
        else:
            arch = dict(arch)
        arch.update(explicit)
        missing = [k for k in ('embed_dims', 'depths', 'num_heads')
                   if k not in arch]
        if missing:
            raise KeyError(f'{type(self).__name__}: arch {arch} lacks '
                           f'{missing}')
        arch['depths'] = list(arch['depths'])
        arch['num_heads'] = list(arch['num_heads'])
        kwargs['window_size'] = tuple(kwargs.get('window_size', (8, 7, 7)))
        kwargs['patch_size'] = tuple(kwargs.get('patch_size', (2, 4, 4)))
        super().__init__(
            arch=arch,
            pretrained=pretrained,
            pretrained2d=pretrained2d,
            **kwargs)
        # every state dict loaded into this module passes through here
        self._register_load_state_dict_pre_hook(self._fit_state_dict_hook)

    # ------------------------------------------------------------------
    @property
    def out_channels(self):
        """Channels of each output, in ``out_indices`` order."""
        return [self.num_features[i] for i in self.out_indices]

    def train(self, mode: bool = True):
        # mmaction's SwinTransformer3D.train() returns None
        super().train(mode)
        return self

    # ------------------------------------------------------------------
    # inflation (2D -> 3D), reusing mmaction's inflate_weights
    # ------------------------------------------------------------------
    def inflate_weights(self, logger: MMLogger, state_dict=None):
        """Inflate 2D Swin weights into this model (mmaction's logic).

        Args:
            logger (MMLogger): where mmaction's method logs (its final
                ``load_state_dict`` result is returned instead).
            state_dict (dict, optional): original-Swin-named 2D weights; read
                from ``self.pretrained`` (safely, iCAR renames undone) when
                None.

        Returns:
            The ``load_state_dict`` result of mmaction's inflation
            (``missing_keys`` / ``unexpected_keys``; the missing keys include
            the rebuilt ``relative_position_index`` buffers), or None.
        """
        if state_dict is None:
            state_dict = _original_swin_2d(
                unwrap_state_dict(
                    load_checkpoint_file(self.pretrained), self.pretrained),
                self.pretrained)
        own = self.state_dict()
        if 'patch_embed.proj.weight' not in state_dict:
            raise CheckpointError(
                f'{type(self).__name__}: the 2D checkpoint has no '
                "'patch_embed.proj.weight': not a Swin image encoder; first "
                f'keys {list(state_dict)[:5]}')
        weight = state_dict['patch_embed.proj.weight']
        if tuple(weight.shape[:2]) != tuple(
                own['patch_embed.proj.weight'].shape[:2]):
            raise CheckpointError(
                f'{type(self).__name__}: the checkpoint patch embedding is '
                f'{tuple(weight.shape)}, the model\'s '
                f"{tuple(own['patch_embed.proj.weight'].shape)}: a different "
                'Swin width; set arch/embed_dims to match the checkpoint')
        # mmaction indexes self.state_dict() with every table key it gets;
        # keep what the model has (plus the final 'norm' it renames).
        kept = OrderedDict((k, v) for k, v in state_dict.items()
                           if k in own or k in ('norm.weight', 'norm.bias'))
        catcher = _LoadResultCatcher(logger)
        with _serve_to_mmaction_inflation(kept):
            super().inflate_weights(catcher)
        return catcher.result

    def inflate_state_dict(self, state_dict) -> Dict[str, torch.Tensor]:
        """2D (original Swin names) -> this model's 3D tensors.

        Inflates into the model (mmaction's ``inflate_weights``) and returns
        the resulting tensors of the keys the checkpoint provided.
        """
        last = self.num_layers - 1
        provided = {
            f'norm{last}.' + k.split('.', 1)[1] if k in ('norm.weight',
                                                         'norm.bias') else k
            for k in state_dict
        }
        self.inflate_weights(MMLogger.get_current_instance(), state_dict)
        own = self.state_dict()
        return OrderedDict((k, v.clone()) for k, v in own.items()
                           if k in provided or _INDEX in k)

    # ------------------------------------------------------------------
    # temporal window changes
    # ------------------------------------------------------------------
    def fit_relative_position_tables(self,
                                     state_dict,
                                     prefix: str = '') -> Dict[str, tuple]:
        """Resize 3D bias tables of another window in place.

        ``relative_position_index`` buffers are replaced by the model's own
        (they depend only on the window).  Returns ``{key: (src_window,
        dst_window)}`` for every table that was resized.
        """
        own = self.state_dict()
        resized = {}
        for key in [
                k for k in state_dict
                if k.startswith(prefix) and k.endswith(_TABLE)
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
            index_key = key[:-len(_TABLE)] + _INDEX
            index = state_dict.get(index_key)
            src = infer_table_window(
                table.shape[0],
                tuple(index.shape) if index is not None else None,
                self.window_size[1:], key)
            state_dict[key] = interpolate_relative_position_bias(
                table, src, self.window_size)
            resized[key] = (src, tuple(self.window_size))
        for key in [
                k for k in state_dict
                if k.startswith(prefix) and k.endswith(_INDEX)
        ]:
            name = key[len(prefix):]
            if name in own:
                state_dict[key] = own[name].clone()
        return resized

    def _fit_state_dict_hook(self, state_dict, prefix, local_metadata, strict,
                             missing_keys, unexpected_keys, error_msgs):
        """Adapt any state dict loaded into the model (pre-hook).

        2D patch embeddings (an image checkpoint given to a video model)
        are inflated; 3D tables of another window are interpolated.
        """
        patch_key = prefix + 'patch_embed.proj.weight'
        patch = state_dict.get(patch_key)
        if patch is not None and patch.dim() == 4:
            sd2d = _strip_prefix(state_dict, prefix)
            for key in [k for k in state_dict if k.startswith(prefix)]:
                del state_dict[key]
            for key, value in self.inflate_state_dict(sd2d).items():
                state_dict[prefix + key] = value
            print_log(
                f'{type(self).__name__}: inflated 2D Swin weights found '
                f'under {prefix!r} to 3D',
                logger='current')
            return
        resized = self.fit_relative_position_tables(state_dict, prefix)
        if resized:
            src, dst = next(iter(resized.values()))
            print_log(
                f'{type(self).__name__}: {len(resized)} relative position '
                f'bias tables interpolated from window {src} to {dst}',
                logger='current')

    # ------------------------------------------------------------------
    def init_weights(self) -> None:
        """Load ``pretrained`` / a ``Pretrained`` init_cfg, else init."""
        path, prefix = self.pretrained, None
        init_cfgs = self.init_cfg
        if isinstance(init_cfgs, dict):
            init_cfgs = [init_cfgs]
        pretrained = [
            c for c in init_cfgs or [] if c.get('type') == 'Pretrained'
        ]
        if path is None and pretrained:
            path = pretrained[0]['checkpoint']
            prefix = pretrained[0].get('prefix')
        if path is None:
            # mmaction's init_weights would inflate pretrained=None
            BaseModule.init_weights(self)
            return
        logger = MMLogger.get_current_instance()
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
            self._load_3d(state_dict, path, logger)
        else:
            self._inflate_from(state_dict, path, logger)
        self._is_init = True

    def _inflate_from(self, state_dict, path, logger) -> None:
        """``init_weights`` from a 2D file: inflate, then two lines: what
        was inflated (with any truly missing / unexpected key) and the
        "rebuilt / unused" buffers (the file's and the model's index
        buffers) and ``pos_embed``."""
        rebuilt = []
        sd2d = _original_swin_2d(state_dict, path, rebuilt)
        _take_pos_embed(sd2d, rebuilt)
        expected = {k for k in self.state_dict() if _INDEX not in k}
        last = self.num_layers - 1
        given = {re.sub(r'^norm\.', f'norm{last}.', k) for k in sd2d}
        result = self.inflate_weights(logger, sd2d)
        if result is not None and not any(
                k.endswith(('relative_coords', _INDEX)) for k in rebuilt):
            # the file had no index buffers: name the model's, rebuilt
            rebuilt += [k for k in result.missing_keys if _INDEX in k]
        missing = sorted(expected - given)
        unexpected = sorted(given - set(self.state_dict()))
        print_log(
            f'{type(self).__name__}: inflated the 2D Swin of {path} '
            f'(temporal patch {self.patch_size[0]}, window '
            f'{tuple(self.window_size)}); missing {len(missing)}: '
            f'{missing[:8]}; unexpected {len(unexpected)}: '
            f'{unexpected[:8]}',
            logger=logger)
        log_rebuilt_unused(f'{type(self).__name__} ({path})', rebuilt,
                           logger=logger)

    def _load_3d(self, state_dict, path, logger):
        state_dict = OrderedDict(state_dict)
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if _INDEX not in k]
        print_log(
            f'{type(self).__name__}: loaded 3D weights from {path}; missing '
            f'{len(missing)}: {missing[:8]}; unexpected {len(unexpected)}: '
            f'{unexpected[:8]}',
            logger=logger)

"""iCAR's Swin image encoder inflated to a Video Swin Transformer.

:class:`ICARSwinTransformer3D` is a thin subclass of mmaction2's
``SwinTransformer3D`` (original Swin key names, which is also what iCAR's
visual backbone uses once its own renames are undone).  It adds, all
through :mod:`icar_dense.checkpoint` (the safe ``weights_only`` loader and
the one place that knows the layouts):

* initialisation from an **official iCAR checkpoint** (its renames undone),
  an original 2D Swin checkpoint or a 3D (Video Swin / icar_dense
  recognizer) checkpoint
  (:func:`~icar_dense.checkpoint.load_video_swin_file`);
* 2D -> 3D inflation computed as mmaction2's ``inflate_weights`` computes it
  (patch embedding repeated over time and divided by the temporal patch
  size, the 2D relative position bias table resized bicubically in space
  and repeated for every temporal offset:
  :func:`~icar_dense.checkpoint.inflate_swin2d`), from the converted state
  dict instead of a file read with an unrestricted unpickler, and loaded
  with the backbone's own ``load_state_dict``;
* interpolation of the relative position bias table along **time** (and
  bicubically in space) when a 3D checkpoint was trained with another window
  than the model's, both in ``init_weights`` and whenever a state dict is
  loaded into the model (``load_state_dict``, ``Runner.load_checkpoint``,
  ``tools/test.py``; a pre-hook running
  :func:`~icar_dense.checkpoint.fit_video_state_dict`), so a model trained
  with temporal window 8 can be tested with window 4 or 16.

Its forward is already the authors' (weiyx16/Video-Swin-Transformer, whose
backbone is Video Swin's): per axis, a feature map no larger than the window
is attended as one window, without shift along that axis
(``get_window_size``), e.g. along time for short clips and in space for the
7x7 last stage at 224 px.  iCAR's absolute ``pos_embed`` has no place in
Video Swin and is dropped with one log line, as the authors' code drops it.
"""
from typing import Dict, Optional, Sequence

import torch

from icar_dense import compat

compat.apply()
compat.finish_mmaction_import()  # mmaction.models needs the compat fixes

from mmaction.models.backbones.swin import SwinTransformer3D  # noqa: E402
from mmaction.registry import MODELS  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.model import BaseModule  # noqa: E402

from icar_dense.checkpoint import (  # noqa: E402
    fit_video_position_tables, fit_video_state_dict, infer_table_window,
    inflate_state_dict, inflate_swin2d, interpolate_relative_position_bias,
    load_checkpoint_file, load_video_swin_file, original_swin_2d,
    unwrap_state_dict)

# re-exported: where tests and older code import them from
__all__ = ['ICARSwinTransformer3D', 'infer_table_window',
           'interpolate_relative_position_bias']


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
    # inflation (2D -> 3D): mmaction's computation, our loading
    # ------------------------------------------------------------------
    def inflate_weights(self, logger: MMLogger, state_dict=None):
        """Inflate 2D Swin weights into this model (mmaction's logic).

        Args:
            logger (MMLogger): receives mmaction's warning for a table of
                another number of heads.
            state_dict (dict, optional): original-Swin-named 2D weights; read
                from ``self.pretrained`` (safely, iCAR renames undone) when
                None.

        Returns:
            The ``load_state_dict`` result (``missing_keys`` /
            ``unexpected_keys``; the missing keys include the rebuilt
            ``relative_position_index`` buffers).
        """
        if state_dict is None:
            state_dict = original_swin_2d(
                unwrap_state_dict(
                    load_checkpoint_file(self.pretrained), self.pretrained),
                self.pretrained)
        return self.load_state_dict(
            inflate_swin2d(self, state_dict, logger), strict=False)

    def inflate_state_dict(self, state_dict) -> Dict[str, torch.Tensor]:
        """2D (original Swin names) -> this model's 3D tensors (see
        :func:`icar_dense.checkpoint.inflate_state_dict`)."""
        return inflate_state_dict(self, state_dict)

    def fit_relative_position_tables(self,
                                     state_dict,
                                     prefix: str = '') -> Dict[str, tuple]:
        """Resize 3D bias tables of another window in place (see
        :func:`icar_dense.checkpoint.fit_video_position_tables`)."""
        return fit_video_position_tables(self, state_dict, prefix)

    def _fit_state_dict_hook(self, state_dict, prefix, local_metadata, strict,
                             missing_keys, unexpected_keys, error_msgs):
        """Adapt any state dict loaded into the model (pre-hook): 2D
        weights inflated, 3D tables of another window interpolated."""
        fit_video_state_dict(self, state_dict, prefix)

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
        load_video_swin_file(self, path, prefix,
                             MMLogger.get_current_instance())
        self._is_init = True

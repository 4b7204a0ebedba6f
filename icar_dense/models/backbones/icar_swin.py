"""iCAR's Swin image encoder for mmdet and mmseg.

A thin subclass of mmdet's ``SwinTransformer`` (also used by mmseg's UperNet
through the shared registration): architecture presets, ``init_weights``
that reads official iCAR checkpoints, original Swin checkpoints and OpenMMLab
ones, all through the safe loader (the checkpoint knowledge is
:mod:`icar_dense.checkpoint`'s), and the two places where the forward of
the authors' Swin (``SwinUnsup``) differs from mmdet's:

* **no shift in a block whose feature map fits in its window**: the original
  Swin and iCAR set the shift to 0 when ``min(H, W) <= window`` (at 224 px
  the whole last stage, 7x7); mmdet always shifts odd blocks.  The rule is
  applied per forward from the actual map size, so dense inputs (maps larger
  than the window) compute exactly what mmdet computes;
* iCAR's **absolute position embedding** ``pos_embed`` (SwinUnsup's default
  ``dpe=True``), used when ``use_abs_pos_embed=True`` (zero-shot
  classification at the pre-training size) and dropped with one log line
  otherwise, as the authors' dense code drops it.
"""
import torch.nn.functional as F
from mmdet.models.backbones.swin import ShiftWindowMSA, SwinTransformer
from mmengine.logging import MMLogger
from mmengine.utils import to_2tuple

from icar_dense.checkpoint import load_swin_file, resize_pos_embed
from icar_dense.registry import register_shared_model

__all__ = ['ICARSwinTransformer', 'SWIN_ARCHS', 'WindowFitShiftWindowMSA',
           'resize_pos_embed']

# Swin-T/S/B/L as in the Swin paper; iCAR uses T and B.
SWIN_ARCHS = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12,
                                                                24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2),
                  num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2),
                 num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2),
                  num_heads=(6, 12, 24, 48)),
}
_ARCH_ALIASES = dict(t='tiny', s='small', b='base', l='large')


class WindowFitShiftWindowMSA(ShiftWindowMSA):
    """mmdet's ``ShiftWindowMSA`` with the original Swin's shift rule.

    A block whose feature map fits in its window (``min(H, W) <= window``)
    attends without cyclic shift and without mask, as in the original Swin
    (``if min(input_resolution) <= window_size: shift_size = 0``) and in
    iCAR's ``SlicedBlockFaster``: there, a shifted window would only roll the
    map around and mask it into pieces.  The rule is applied at every forward
    from the map size it receives; larger maps run mmdet's code unchanged.

    Only ``forward`` differs, so parameters, buffers and state-dict keys are
    mmdet's.
    """

    def forward(self, query, hw_shape):
        if self.shift_size == 0 or min(hw_shape) > self.window_size:
            return super().forward(query, hw_shape)
        # mmdet's shift_size == 0 path: pad to the window, plain W-MSA
        batch, length, channels = query.shape
        height, width = hw_shape
        assert length == height * width, 'input feature has wrong size'
        query = query.view(batch, height, width, channels)
        window = self.window_size
        query = F.pad(query, (0, 0, 0, (-width) % window, 0,
                              (-height) % window))
        height_pad, width_pad = query.shape[1:3]
        windows = self.window_partition(query).view(-1, window**2, channels)
        windows = self.w_msa(windows, mask=None).view(-1, window, window,
                                                      channels)
        x = self.window_reverse(windows, height_pad, width_pad)
        x = x[:, :height, :width, :].reshape(batch, height * width, channels)
        return self.drop(x)


@register_shared_model()
class ICARSwinTransformer(SwinTransformer):
    """Swin Transformer image encoder of iCAR.

    Computes what the authors' Swin computes (see the module docstring):
    odd blocks are not shifted where the feature map fits in the window.

    Args:
        arch (str | None): 'tiny', 'small', 'base' or 'large'; explicit
            ``embed_dims``/``depths``/``num_heads`` override the preset.
        use_abs_pos_embed (bool): add iCAR's absolute position embedding
            (checkpoint key ``pos_embed``, shape ``(1, h*w, C)`` with
            ``(h, w) = pretrain_img_size / patch_size``) after the patch
            embedding, as the authors' Swin does.  Set it for zero-shot
            classification at the pre-training size (``configs/cls``); an
            input of another patch grid gets the embedding interpolated
            bicubically (the authors' model only accepts 224 px).  False
            (default, dense tasks): a ``pos_embed`` in the checkpoint is
            dropped with one log line, as the authors' detection,
            segmentation and video code drop it.
        pretrain_img_size (int | tuple[int]): the image size ``pos_embed``
            was trained at (224 for iCAR).  Defaults to 224.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            where PATH is an official iCAR checkpoint, an original Swin
            checkpoint, an OpenMMLab Swin/detector/segmentor checkpoint or
            the output of ``tools/convert_icar.py``.
        **kwargs: the other arguments of mmdet's ``SwinTransformer``.
    """

    def __init__(self, arch='base', init_cfg=None, **kwargs):
        if arch is not None:
            # the spellings the 3D backbone (mmaction's arch_zoo) accepts
            arch = _ARCH_ALIASES.get(arch.lower(), arch.lower())
            if arch not in SWIN_ARCHS:
                raise KeyError(f'ICARSwinTransformer: unknown arch {arch!r}; '
                               f'choose from {sorted(SWIN_ARCHS)}')
            for key, value in SWIN_ARCHS[arch].items():
                kwargs.setdefault(key, value)
        kwargs.setdefault('window_size', 7)
        kwargs.setdefault('out_indices', (0, 1, 2, 3))
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.arch = arch
        # the patch grid absolute_pos_embed is stored for (mmdet's rule)
        pretrain = to_2tuple(kwargs.get('pretrain_img_size', 224))
        patch = kwargs.get('patch_size', 4)
        self.pos_embed_grid = (pretrain[0] // patch, pretrain[1] // patch)
        # mmdet's SwinBlock builds its ShiftWindowMSA directly (no registry
        # to override); the subclass adds no state, so re-typing each block's
        # attention keeps mmdet's modules, parameters and keys.
        for stage in self.stages:
            for block in stage.blocks:
                block.attn.__class__ = WindowFitShiftWindowMSA

    def train(self, mode=True):
        # mmdet's SwinTransformer.train() returns None, breaking
        # ``model.eval()`` chains; nn.Module returns the module.
        super().train(mode)
        return self

    @property
    def out_channels(self):
        """Channels of each output, in ``out_indices`` order."""
        return [self.num_features[i] for i in self.out_indices]

    def forward(self, x):
        """mmdet's forward, with the absolute position embedding fitted to
        the input's patch grid (mmdet adds it as is, so only inputs of
        ``pretrain_img_size`` ran)."""
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self._abs_pos_embed_for(hw_shape)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape, out, out_hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(
                    out.view(-1, *out_hw_shape,
                             self.num_features[i]).permute(0, 3, 1,
                                                           2).contiguous())
        return outs

    def _abs_pos_embed_for(self, hw_shape):
        """``absolute_pos_embed`` (1, h*w, C) on the ``hw_shape`` grid."""
        pos = self.absolute_pos_embed
        if tuple(hw_shape) == self.pos_embed_grid:
            return pos
        return resize_pos_embed(pos, self.pos_embed_grid, hw_shape)

    def init_weights(self):
        """Load a ``Pretrained`` init_cfg through
        :func:`icar_dense.checkpoint.load_swin_file` (any supported layout,
        tables fitted to the window, ``pos_embed`` used or dropped), else
        mmdet's initialisation."""
        init_cfg = self.init_cfg
        if isinstance(init_cfg, (list, tuple)) and len(init_cfg) == 1:
            init_cfg = init_cfg[0]
        if not (isinstance(init_cfg, dict)
                and init_cfg.get('type') == 'Pretrained'):
            return super().init_weights()
        if not init_cfg.get('checkpoint'):
            raise KeyError(f"{type(self).__name__}: init_cfg {init_cfg} has "
                           "type 'Pretrained' but no 'checkpoint' path")
        load_swin_file(self, init_cfg['checkpoint'],
                       MMLogger.get_current_instance())
        self._is_init = True

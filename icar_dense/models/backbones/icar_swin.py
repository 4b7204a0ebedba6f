"""iCAR's Swin image encoder for mmdet and mmseg.

A thin subclass of mmdet's ``SwinTransformer`` (also used by mmseg's UperNet
through the shared registration): architecture presets, and ``init_weights``
that reads official iCAR checkpoints, original Swin checkpoints and OpenMMLab
ones, all through the safe loader.
"""
import logging

import torch.nn.functional as F
from mmdet.models.backbones.swin import SwinTransformer
from mmengine.logging import MMLogger, print_log

from icar_dense.registry import register_shared_model
from icar_dense.utils.checkpoint import (CheckpointError, backbone_state_dict,
                                         load_checkpoint_file,
                                         unwrap_state_dict)

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


@register_shared_model()
class ICARSwinTransformer(SwinTransformer):
    """Swin Transformer image encoder of iCAR.

    Args:
        arch (str | None): 'tiny', 'small', 'base' or 'large'; explicit
            ``embed_dims``/``depths``/``num_heads`` override the preset.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            where PATH is an official iCAR checkpoint, an original Swin
            checkpoint, an OpenMMLab Swin/detector/segmentor checkpoint or
            the output of ``tools/convert_icar.py``.
        **kwargs: the arguments of mmdet's ``SwinTransformer``.
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

    def train(self, mode=True):
        # mmdet's SwinTransformer.train() returns None, breaking
        # ``model.eval()`` chains; nn.Module returns the module.
        super().train(mode)
        return self

    @property
    def out_channels(self):
        """Channels of each output, in ``out_indices`` order."""
        return [self.num_features[i] for i in self.out_indices]

    def init_weights(self):
        init_cfg = self.init_cfg
        if isinstance(init_cfg, (list, tuple)) and len(init_cfg) == 1:
            init_cfg = init_cfg[0]
        if not (isinstance(init_cfg, dict)
                and init_cfg.get('type') == 'Pretrained'):
            return super().init_weights()
        logger = MMLogger.get_current_instance()
        if not init_cfg.get('checkpoint'):
            raise KeyError(f"{type(self).__name__}: init_cfg {init_cfg} has "
                           "type 'Pretrained' but no 'checkpoint' path")
        path = init_cfg['checkpoint']
        state_dict = backbone_state_dict(
            unwrap_state_dict(load_checkpoint_file(path), path), path)
        if not any(k.startswith('stages.') for k in state_dict):
            raise CheckpointError(
                f'{path}: no Swin backbone weights (no stages.* keys after '
                f'conversion; found e.g. {list(state_dict)[:3]}): is it a '
                'text-only or non-Swin checkpoint?')
        state_dict = self._fit_position_tables(state_dict, logger)
        try:
            missing, unexpected = self.load_state_dict(
                state_dict, strict=False)
        except RuntimeError as err:
            mismatches = [line.strip() for line in str(err).splitlines()
                          if 'size mismatch' in line]
            if not mismatches:
                raise
            raise CheckpointError(
                f'{path}: its Swin weights do not fit this '
                f'{type(self).__name__} (arch={self.arch!r}); '
                f'{len(mismatches)} tensors differ, e.g. {mismatches[0]} '
                'Set `arch` to the checkpoint\'s architecture.') from None
        # relative_position_index buffers are rebuilt, not loaded
        missing = [k for k in missing if 'relative_position_index' not in k]
        matched = len(state_dict) - len(unexpected)
        print_log(
            f'{type(self).__name__}: loaded {matched} tensors from {path}; '
            f'missing {len(missing)}: {missing[:8]}; unexpected '
            f'{len(unexpected)}: {unexpected[:8]}',
            logger=logger)
        self._is_init = True

    def _fit_position_tables(self, state_dict, logger):
        """Bicubic resize of relative position tables when windows differ."""
        current = self.state_dict()
        # index buffers depend only on the window size: always rebuilt
        for key in [k for k in state_dict if 'relative_position_index' in k]:
            state_dict.pop(key)
        for key in [k for k in state_dict
                    if 'relative_position_bias_table' in k]:
            if key not in current:
                continue
            table = state_dict[key]
            length, heads = table.shape
            new_length, new_heads = current[key].shape
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
        pos = state_dict.get('absolute_pos_embed')
        if pos is not None and self.use_abs_pos_embed and pos.dim() == 3:
            n, length, channels = pos.shape
            _, _, height, width = self.absolute_pos_embed.shape
            if length == height * width:
                state_dict['absolute_pos_embed'] = pos.view(
                    n, height, width, channels).permute(0, 3, 1, 2)
        return state_dict

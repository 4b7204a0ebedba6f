"""Write checkpoints in the exact official iCAR layout for tests.

The mapping below is written out independently of icar_dense's converter
(the inverse direction: OpenMMLab Swin -> original Swin -> iCAR renames), so
a round trip through ``tools/convert_icar.py`` checks the converter.
"""
import re
from collections import OrderedDict

import torch

PERM = [0, 2, 1, 3]


def _unfold_reduction_to_original(weight):
    out_channels, in_channels = weight.shape
    w = weight.reshape(out_channels, in_channels // 4, 4).transpose(1, 2)
    return w[:, PERM, :].reshape(out_channels, in_channels)


def _unfold_norm_to_original(weight):
    channels = weight.shape[0]
    w = weight.reshape(channels // 4, 4).transpose(0, 1)
    return w[PERM, :].reshape(channels)


def openmmlab_swin_to_icar(state_dict, last_stage):
    """OpenMMLab SwinTransformer keys -> iCAR's visual backbone keys."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if re.match(r'norm\d+\.', key):
            if key.startswith(f'norm{last_stage}.'):
                out['norm.' + key.split('.', 1)[1]] = value
            continue  # the original Swin has only the final norm
        new = key.replace('patch_embed.projection', 'patch_embed.proj')
        new = re.sub(r'^stages\.', 'layers.', new)
        new = new.replace('.attn.w_msa.', '.attn.')
        new = new.replace('.ffn.layers.0.0.', '.mlp.fc1.')
        new = new.replace('.ffn.layers.1.', '.mlp.fc2.')
        if '.downsample.reduction.' in new:
            value = _unfold_reduction_to_original(value)
            new = new.replace('.reduction.', '.channel_reduction.')
        elif '.downsample.norm.' in new:
            value = _unfold_norm_to_original(value)
        if new.endswith('relative_position_index'):
            new = new.replace('relative_position_index', 'relative_coords')
            value = torch.randint(0, 5, value.shape)  # iCAR's stale buffer
        new = new.replace('relative_position_bias_table',
                          'rel_pos_embed_table')
        out[new] = value
    return out


def icar_checkpoint(swin_state_dict, last_stage, visual_proj=None,
                    text_state_dict=None):
    """``{'model': flat state dict}`` as the official release stores it."""
    model = OrderedDict()
    for key, value in openmmlab_swin_to_icar(swin_state_dict,
                                             last_stage).items():
        model['visual_model.backbone.' + key] = value
    if visual_proj is not None:
        model['visual_model.projector.weight'] = visual_proj
    for key, value in (text_state_dict or {}).items():
        model['sentence_model.' + key] = value
    return dict(model=model, epoch=30)

"""Write checkpoints in the exact official iCAR layout for tests.

The mapping below is written out independently of icar_dense's converter
(the inverse direction: OpenMMLab Swin -> original Swin -> iCAR renames), so
a round trip through ``tools/convert_icar.py`` checks the converter.

:func:`icar_checkpoint` returns the file as the authors' training code saves
it (their ``SwinUnsup`` image encoder with ``SlicedBlockFaster`` blocks and
``RPETableAttention``, a HuggingFace RoBERTa): top-level ``model``,
``optimizer`` (a real AdamW state dict), ``epoch``, ``scaler`` (a GradScaler
state dict) and ``args`` (an ``argparse.Namespace``), and in ``model``,
beside the weights, the buffers ``attn.relative_coords`` (every block,
int64), ``atten_mask_matrix`` (odd blocks of stages whose map is larger than
the window; ``(nW, N, N)`` of 0 / -100), the absolute position embedding
``pos_embed`` ``(1, (H/4)(W/4), C)`` and RoBERTa's
``embeddings.position_ids`` and ``pooler.dense.*``.  Save it with plain
``torch.save`` so the Namespace is pickled as in the authors' file.
"""
import argparse
import contextlib
import math
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


def authors_relative_coords(window):
    """``RPETableAttention.relative_coords`` (N x N, int64), N = window**2:
    the flat index into ``rel_pos_embed_table`` of each token pair."""
    coords = torch.stack(torch.meshgrid(
        torch.arange(window), torch.arange(window), indexing='ij'))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def authors_shift_mask(resolution, window):
    """``SlicedBlockFaster.atten_mask_matrix`` of a shifted block on a
    ``resolution x resolution`` map: ``(nW, N, N)`` float of 0 / -100.

    The authors' region numbering, on the map padded to whole windows.
    """
    split, disturb = window, window // 2
    side = math.ceil(resolution / window) * window
    img_mask = torch.zeros((1, side, side, 1))
    img_mask[:, -disturb:, -disturb:, :] = 1
    img_mask[:, -disturb:, :-split, :] = 2
    img_mask[:, -disturb:, -split:-disturb, :] = 3
    img_mask[:, :-split, -disturb:, :] = 4
    img_mask[:, :-split, -split:-disturb, :] = 5
    img_mask[:, -split:-disturb, -disturb:, :] = 6
    img_mask[:, -split:-disturb, :-split, :] = 7
    img_mask[:, -split:-disturb, -split:-disturb, :] = 8
    n = side // split
    splits = img_mask.view(1, n, split, n, split, 1).permute(
        0, 1, 3, 2, 4, 5).contiguous().view(-1, split * split)
    mask = splits.unsqueeze(1) - splits.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _window_of(state_dict):
    for key, value in state_dict.items():
        if key.endswith('relative_position_bias_table'):
            return (int(round(value.shape[0]**0.5)) + 1) // 2
    raise KeyError('no relative_position_bias_table: not a Swin state dict')


def openmmlab_swin_to_icar(state_dict, last_stage):
    """OpenMMLab SwinTransformer keys -> iCAR's visual backbone keys.

    ``relative_position_index`` becomes the authors' ``relative_coords``
    (same values, their computation); other buffers are added by
    :func:`icar_checkpoint`.
    """
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
            window = int(round(value.shape[0]**0.5))
            value = authors_relative_coords(window)
        new = new.replace('relative_position_bias_table',
                          'rel_pos_embed_table')
        out[new] = value
    return out


def _with_authors_buffers(swin, img_size, window, pos_embed):
    """``swin`` (iCAR names) with ``atten_mask_matrix`` and ``pos_embed``
    where the authors' state dict has them (module order)."""
    out = OrderedDict()
    embed_dims = swin['patch_embed.proj.weight'].shape[0]
    grid = img_size // 4
    if pos_embed is True:
        generator = torch.Generator().manual_seed(1234)
        pos_embed = torch.randn(1, grid * grid, embed_dims,
                                generator=generator) * 0.02
    if pos_embed is not None and pos_embed is not False:
        assert tuple(pos_embed.shape) == (1, grid * grid, embed_dims)
        out['pos_embed'] = pos_embed  # SwinUnsup's own parameter: first
    seen = set()
    for key, value in swin.items():
        m = re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', key)
        if m and m.group(0) not in seen:
            seen.add(m.group(0))
            stage, block = int(m.group(1)), int(m.group(2))
            resolution = grid
            for _ in range(stage):
                resolution = math.ceil(resolution / 2)
            if block % 2 == 1 and resolution > window:
                # the block's own buffer precedes its submodules
                out[m.group(0) + 'atten_mask_matrix'] = authors_shift_mask(
                    resolution, window)
        out[key] = value
    return out


def _with_roberta_extras(text_state_dict):
    """The text tower as an older transformers saved it: with
    ``embeddings.position_ids`` and the (unused) pooler."""
    prefix = 'backbone.'
    words = text_state_dict.get(prefix + 'embeddings.word_embeddings.weight')
    positions = text_state_dict.get(
        prefix + 'embeddings.position_embeddings.weight')
    if words is None or positions is None:
        return OrderedDict(text_state_dict)
    hidden = words.shape[1]
    generator = torch.Generator().manual_seed(4321)
    pooler = OrderedDict([
        (prefix + 'pooler.dense.weight',
         torch.randn(hidden, hidden, generator=generator) * 0.02),
        (prefix + 'pooler.dense.bias', torch.zeros(hidden)),
    ])
    out = OrderedDict()
    for key, value in text_state_dict.items():
        if key == prefix + 'embeddings.word_embeddings.weight':
            # the embeddings' own buffer precedes its submodules
            out[prefix + 'embeddings.position_ids'] = torch.arange(
                positions.shape[0]).expand((1, -1)).clone()
        if not key.startswith(prefix) and pooler:
            out.update(pooler)  # the pooler closes the RoBERTa model
            pooler = None
        out[key] = value
    if pooler:
        out.update(pooler)
    return out


def authors_args(**overrides):
    """``args`` as the authors' ``main.py`` parses it (argparse.Namespace)."""
    parser = argparse.ArgumentParser('iCAR training and evaluation script')
    parser.add_argument('--cfg', type=str, required=True)
    parser.add_argument('--opts', default=None, nargs='+')
    parser.add_argument('--batch-size', type=int)
    parser.add_argument('--data-path', type=str)
    parser.add_argument('--zip', action='store_true')
    parser.add_argument('--cache-mode', type=str, default='part',
                        choices=['no', 'full', 'part'])
    parser.add_argument('--pretrained', type=str)
    parser.add_argument('--resume', type=str)
    parser.add_argument('--accumulation-steps', type=int)
    parser.add_argument('--use-checkpoint', action='store_true')
    parser.add_argument('--amp-opt-level', type=str, default='O1',
                        choices=['O0', 'O1', 'O2'])
    parser.add_argument('--output', default='output', type=str)
    parser.add_argument('--tag', type=str)
    parser.add_argument('--eval', action='store_true')
    parser.add_argument('--throughput', action='store_true')
    parser.add_argument('--local_rank', type=int, default=0)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--text-max-length', type=int, default=16)
    parser.add_argument('--temperature', type=float, default=0.05)
    args = parser.parse_args([
        '--cfg', 'configs/icar/swin_base_patch4_window7_224_22k_laion.yaml',
        '--batch-size', '128', '--data-path', '/data/imagenet22k',
        '--zip', '--accumulation-steps', '2', '--use-checkpoint',
        '--output', '/output/icar', '--tag', 'swinb_22k_laion_bs4096',
        '--local_rank', '3', '--opts', 'TRAIN.EPOCHS', '30'
    ])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def authors_optimizer_state(model_state_dict, steps=1):
    """A real AdamW ``state_dict`` over the float tensors of the model."""
    params = [
        torch.nn.Parameter(v.detach().clone().float())
        for k, v in model_state_dict.items()
        if torch.is_floating_point(v) and not k.endswith('atten_mask_matrix')
    ]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        sum(p.square().sum() for p in params).backward()
        optimizer.step()
    return optimizer.state_dict()


def authors_scaler_state():
    """``torch.cuda.amp.GradScaler().state_dict()`` of an enabled scaler."""
    try:
        state = torch.amp.GradScaler('cpu').state_dict()
    except (AttributeError, TypeError, RuntimeError):
        state = {}
    return state or {'scale': 65536.0, 'growth_factor': 2.0,
                     'backoff_factor': 0.5, 'growth_interval': 2000,
                     '_growth_tracker': 0}


def icar_checkpoint(swin_state_dict, last_stage, visual_proj=None,
                    text_state_dict=None, img_size=224, pos_embed=True,
                    training_state=True, epoch=30):
    """The official iCAR file as the authors' saver writes it.

    Args:
        swin_state_dict (dict): An OpenMMLab ``SwinTransformer`` state dict.
        last_stage (int): Index of its last stage (its ``norm`` is the
            original Swin's final norm).
        visual_proj (Tensor, optional): ``visual_model.projector.weight``.
        text_state_dict (dict, optional): ``RobertaTextEncoder`` state dict
            (``backbone.*`` RoBERTa, ``projector.weight``); written below
            ``sentence_model.`` with ``position_ids`` and ``pooler.*``.
        img_size (int): Pre-training resolution: the size of ``pos_embed``
            and of the shift masks. Defaults to 224.
        pos_embed (bool | Tensor | None): True writes a random
            ``(1, (img_size/4)**2, C)`` embedding (std 0.02); a tensor is
            written as is; False/None leaves it out.
        training_state (bool): Write ``optimizer``, ``epoch``, ``scaler``
            and ``args`` beside ``model``. Defaults to True.
        epoch (int): The ``epoch`` entry.

    Returns:
        dict: ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``.
    """
    swin = openmmlab_swin_to_icar(swin_state_dict, last_stage)
    swin = _with_authors_buffers(swin, img_size, _window_of(swin_state_dict),
                                 pos_embed)
    model = OrderedDict()
    for key, value in swin.items():
        model['visual_model.backbone.' + key] = value
    if visual_proj is not None:
        model['visual_model.projector.weight'] = visual_proj
    if text_state_dict:
        for key, value in _with_roberta_extras(text_state_dict).items():
            model['sentence_model.' + key] = value
    if not training_state:
        return dict(model=model)
    return dict(model=model,
                optimizer=authors_optimizer_state(model),
                epoch=epoch,
                scaler=authors_scaler_state(),
                args=authors_args())


@contextlib.contextmanager
def captured_mm_log():
    """Collect the messages of every MMLogger (``print_log``) in a list,
    INFO included whatever the level of the current logger (a runner of an
    earlier test may have left one at WARNING)."""
    from mmengine.logging import MMLogger
    messages = []
    original_call, original_enabled = (MMLogger.callHandlers,
                                       MMLogger.isEnabledFor)

    def call_handlers(self, record):
        messages.append(record.getMessage())
        return original_call(self, record)

    def is_enabled_for(self, level):
        return level >= 20 or original_enabled(self, level)

    MMLogger.callHandlers = call_handlers
    MMLogger.isEnabledFor = is_enabled_for
    try:
        yield messages
    finally:
        MMLogger.callHandlers = original_call
        MMLogger.isEnabledFor = original_enabled

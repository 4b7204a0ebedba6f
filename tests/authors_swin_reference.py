"""A functional reference of the iCAR authors' Swin forward, for tests.

Written from the authors' code, not from mmdet's or mmaction's:

* images -- ``SwinUnsup`` with ``BasicLayer`` / ``SlicedBlockFaster`` /
  ``RPETableAttention`` / ``ConCatDownSample`` (split_version 'faster',
  rpe 'table'): patch embedding -> [``pos_embed``] -> blocks -> concatenating
  downsample -> final norm -> mean over tokens (``forward_features``);
* video -- weiyx16/Video-Swin-Transformer
  (``mmaction/models/backbones/swin_transformer.py``): its
  ``inflate_weights`` applied to an iCAR state dict, then its
  ``SwinTransformer3D`` forward, mean-pooled.

Every function reads a plain state dict in the authors' key layout
(``visual_model.backbone.layers.0.blocks.0.attn.rel_pos_embed_table``,
``...downsample.channel_reduction.weight``, the ``relative_coords`` and
``atten_mask_matrix`` buffers, ``pos_embed``), so a test compares the
project's converter + backbone against it without sharing code with them.

The authors' image model only accepts maps that are multiples of the window
(224 px at training time).  For dense sizes the reference pads each block
input to a multiple of the window after ``norm1`` and builds the mask on the
padded map, which is what the authors' detection/segmentation Swin
(Swin-Transformer-Object-Detection) does; for multiples of the window it is
exactly ``SlicedBlockFaster``.
"""
import math
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F

PREFIX = 'visual_model.backbone.'
LN_EPS = 1e-5  # nn.LayerNorm's default, used by SwinUnsup and Video Swin


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def _layer_norm(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[name + '.weight'],
                        sd[name + '.bias'], LN_EPS)


def _linear(x, sd, name):
    return F.linear(x, sd[name + '.weight'], sd.get(name + '.bias'))


def _mlp(x, sd, name):
    return _linear(F.gelu(_linear(x, sd, name + '.fc1')), sd, name + '.fc2')


def _strip(state_dict, prefix):
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def _depths(sd):
    """Blocks per stage, read off ``layers.I.blocks.J.`` keys."""
    depths = {}
    for key in sd:
        m = re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', key)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            depths[i] = max(depths.get(i, 0), j + 1)
    return [depths[i] for i in range(len(depths))]


def _num_heads(sd, layer, table_name):
    return sd[f'layers.{layer}.blocks.0.attn.{table_name}'].shape[1]


# ---------------------------------------------------------------------------
# the authors' buffers
# ---------------------------------------------------------------------------
def relative_coords(window):
    """``RPETableAttention.relative_coords``: (N, N) rows into the table.

    ``window`` is (Ph, Pw); offsets are shifted to start at 0 and the row
    offset is scaled by ``2*Pw-1``.
    """
    wh, ww = window
    coords = torch.stack(
        torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij'))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    return rel.sum(-1)


def _img2splits(img, split):
    """``faster_img2splits``: (B, H, W, C) -> (B*nW, split*split, C)."""
    b, h, w, c = img.shape
    return img.view(b, h // split, split, w // split, split,
                    c).permute(0, 1, 3, 2, 4, 5).reshape(-1, split * split, c)


def _splits2img(windows, split, b, h, w):
    """``faster_splits2img``: the inverse of :func:`_img2splits`."""
    return windows.view(b, h // split, w // split, split, split,
                        -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def atten_mask_matrix(height, width, split, disturb):
    """``SlicedBlockFaster.atten_mask_matrix`` for an (H, W) map.

    Nine regions: the last ``split`` rows/columns cut at ``-disturb``; pairs
    of tokens of different regions get -100.
    """
    img = torch.zeros(1, height, width, 1)
    s, d = split, disturb
    img[:, :-s, :-s] = 0
    img[:, -d:, -d:] = 1
    img[:, -d:, :-s] = 2
    img[:, -d:, -s:-d] = 3
    img[:, :-s, -d:] = 4
    img[:, :-s, -s:-d] = 5
    img[:, -s:-d, -d:] = 6
    img[:, -s:-d, :-s] = 7
    img[:, -s:-d, -s:-d] = 8
    regions = _img2splits(img, split).squeeze(-1)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def authors_disturb_size(block, map_hw, split):
    """The authors' shift: ``split//2`` in odd blocks, 0 in even ones and in
    every block whose map is no larger than the split (``min(res) <=
    split_size`` in ``SlicedBlockFaster.__init__``)."""
    if block % 2 == 0 or min(map_hw) <= split:
        return 0
    return split // 2


# ---------------------------------------------------------------------------
# a random model in the authors' layout
# ---------------------------------------------------------------------------
def random_authors_swin(embed_dim=8,
                        depths=(2, 2, 2, 2),
                        num_heads=(1, 2, 2, 4),
                        split_size=7,
                        img_size=224,
                        patch_size=4,
                        mlp_ratio=4,
                        patch_norm=True,
                        reduce_norm=True,
                        dpe=True,
                        seed=0):
    """``SwinUnsup(...).state_dict()`` with random, non-trivial values.

    Keys, shapes and buffers are those of ``SwinUnsup(rpe='table',
    split_version='faster', disturb=True, reduce_channels=[2, 2, 2, 2])``
    (bare, without the ``visual_model.backbone.`` prefix): ``pos_embed``
    (dpe), ``patch_embed.norm`` (patch_norm), ``downsample.norm`` over 4C
    (reduce_norm), ``relative_coords`` in every block and
    ``atten_mask_matrix`` in the odd blocks of stages whose map is larger
    than the split.  Values are far from the usual init (tables and position
    embeddings of unit scale, norms away from identity) so that a wrong
    mapping or a wrong shift changes the output visibly.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    def linear(out_f, in_f, bias=True):
        weight = randn(out_f, in_f, std=in_f**-0.5)
        return (weight, randn(out_f, std=0.1)) if bias else (weight, None)

    def norm(dim):
        return 1 + randn(dim, std=0.2), randn(dim, std=0.1)

    sd = OrderedDict()

    def put(name, pair):
        sd[name + '.weight'] = pair[0]
        if pair[1] is not None:
            sd[name + '.bias'] = pair[1]

    res = [img_size // patch_size, img_size // patch_size]
    if dpe:
        sd['pos_embed'] = randn(1, res[0] * res[1], embed_dim, std=0.5)
    sd['patch_embed.proj.weight'] = randn(
        embed_dim, 3, patch_size, patch_size, std=(3 * patch_size**2)**-0.5)
    sd['patch_embed.proj.bias'] = randn(embed_dim, std=0.1)
    if patch_norm:
        put('patch_embed.norm', norm(embed_dim))
    dim = embed_dim
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        for j in range(depth):
            name = f'layers.{i}.blocks.{j}'
            put(name + '.norm1', norm(dim))
            sd[name + '.attn.rel_pos_embed_table'] = randn(
                (2 * split_size - 1)**2, heads)
            sd[name + '.attn.relative_coords'] = relative_coords(
                (split_size, split_size))
            put(name + '.attn.qkv', linear(3 * dim, dim))
            put(name + '.attn.proj', linear(dim, dim))
            put(name + '.norm2', norm(dim))
            put(name + '.mlp.fc1', linear(mlp_ratio * dim, dim))
            put(name + '.mlp.fc2', linear(dim, mlp_ratio * dim))
            disturb = authors_disturb_size(j, res, split_size)
            if disturb:
                sd[name + '.atten_mask_matrix'] = atten_mask_matrix(
                    res[0], res[1], split_size, disturb)
        if i < len(depths) - 1:
            name = f'layers.{i}.downsample'
            put(name + '.channel_reduction', linear(2 * dim, 4 * dim, False))
            if reduce_norm:
                put(name + '.norm', norm(4 * dim))
            dim *= 2
            res = [math.ceil(res[0] / 2), math.ceil(res[1] / 2)]
    put('norm', norm(dim))
    return sd


# ---------------------------------------------------------------------------
# attention shared by the image and the video reference
# ---------------------------------------------------------------------------
def _window_attention(tokens, sd, name, heads, index, table_name, mask):
    """``RPETableAttention.forward`` (``WindowAttention3D`` is the same
    computation): tokens (B*nW, N, C); ``index`` (N, N) rows of the table;
    ``mask`` (nW, N, N) or None."""
    bn, n, c = tokens.shape
    qkv = _linear(tokens, sd, name + '.qkv').reshape(bn, n, 3, heads,
                                                     c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads)**-0.5) @ k.transpose(-2, -1)
    table = sd.get(f'{name}.{table_name}')
    if table is not None:  # rpe 'none' blocks have no table
        bias = table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(bn // nw, nw, heads, n, n) + mask[None, :, None]
        attn = attn.view(bn, heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(bn, n, c)
    return _linear(out, sd, name + '.proj')


# ---------------------------------------------------------------------------
# images: SwinUnsup.forward_features
# ---------------------------------------------------------------------------
def _sliced_block(x, hw, sd, name, heads, split, disturb):
    """``SlicedBlockFaster.forward`` (+ Swin-Det padding, see the module
    docstring)."""
    h, w = hw
    b, _, c = x.shape
    img = _layer_norm(x, sd, name + '.norm1').view(b, h, w, c)
    img = F.pad(img, (0, 0, 0, (-w) % split, 0, (-h) % split))
    hp, wp = img.shape[1:3]
    mask = None
    if disturb:
        img = torch.roll(img, (-disturb, -disturb), (1, 2))
        mask = atten_mask_matrix(hp, wp, split, disturb)
    index = sd.get(name + '.attn.relative_coords')
    if index is None:  # the authors' model always has it; be lenient
        index = relative_coords((split, split))
    out = _window_attention(
        _img2splits(img, split), sd, name + '.attn', heads, index,
        'rel_pos_embed_table', mask)
    img = _splits2img(out, split, b, hp, wp)
    if disturb:
        img = torch.roll(img, (disturb, disturb), (1, 2))
    x = x + img[:, :h, :w].reshape(b, h * w, c)
    return x + _mlp(_layer_norm(x, sd, name + '.norm2'), sd, name + '.mlp')


def _concat_downsample(x, hw, sd, name):
    """``ConCatDownSample.forward``: pad odd maps, concatenate the 2x2
    neighbours in the order (0,0) (1,0) (0,1) (1,1) -- (row, column) --,
    optional norm over 4C, bias-free ``channel_reduction``."""
    h, w = hw
    b, _, c = x.shape
    img = x.view(b, h, w, c)
    if h % 2 or w % 2:
        img = F.pad(img, (0, 0, 0, w % 2, 0, h % 2))
    img = torch.cat([img[:, 0::2, 0::2], img[:, 1::2, 0::2],
                     img[:, 0::2, 1::2], img[:, 1::2, 1::2]], -1)
    x = img.reshape(b, -1, 4 * c)
    if name + '.norm.weight' in sd:
        x = _layer_norm(x, sd, name + '.norm')
    x = F.linear(x, sd[name + '.channel_reduction.weight'])
    return x, (math.ceil(h / 2), math.ceil(w / 2))


@torch.no_grad()
def authors_swin_forward(state_dict,
                         images,
                         split_size=7,
                         patch_size=4,
                         use_pos_embed=True,
                         prefix=PREFIX):
    """Pooled last-stage features of the authors' Swin, (B, C).

    Args:
        state_dict (dict): the iCAR state dict (``prefix`` keys are used;
            pass ``prefix=''`` for a bare backbone state dict).
        images (Tensor): (B, 3, H, W), H and W multiples of ``patch_size``.
        split_size (int): the window (``split_size`` of SwinUnsup).
        use_pos_embed (bool): add ``pos_embed`` after the patch embedding
            (SwinUnsup with dpe=True; it only exists at the pre-training
            size).  False models the authors' dense code, which drops it.
    """
    sd = _strip(state_dict, prefix) if prefix else dict(state_dict)
    b, _, height, width = images.shape
    assert height % patch_size == 0 and width % patch_size == 0
    x = F.conv2d(images, sd['patch_embed.proj.weight'],
                 sd['patch_embed.proj.bias'], stride=patch_size)
    hw = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    if 'patch_embed.norm.weight' in sd:
        x = _layer_norm(x, sd, 'patch_embed.norm')
    if use_pos_embed:
        assert sd['pos_embed'].shape[1] == x.shape[1], \
            'the authors\' pos_embed only fits the pre-training size'
        x = x + sd['pos_embed']
    # pos_drop, attention/path dropouts: identity at test time
    depths = _depths(sd)
    for i, depth in enumerate(depths):
        heads = _num_heads(sd, i, 'rel_pos_embed_table')
        for j in range(depth):
            x = _sliced_block(x, hw, sd, f'layers.{i}.blocks.{j}', heads,
                              split_size,
                              authors_disturb_size(j, hw, split_size))
        if i < len(depths) - 1:
            x, hw = _concat_downsample(x, hw, sd, f'layers.{i}.downsample')
    return _layer_norm(x, sd, 'norm').mean(1)


# ---------------------------------------------------------------------------
# video: the authors' Video Swin (inflate_weights + SwinTransformer3D)
# ---------------------------------------------------------------------------
def inflate_authors_swin(state_dict, temporal_patch, window,
                         prefix=PREFIX):
    """The authors' ``SwinTransformer3D.inflate_weights`` for a VL model.

    iCAR renames undone (``relative_coords`` and ``*attn_mask*`` dropped;
    ``atten_mask_matrix`` and ``pos_embed`` stay, the model ignores them as
    unexpected keys), patch kernel repeated over time and divided by the
    temporal patch size, each 2D table resized bicubically when the spatial
    window differs and repeated for the ``2*Wd-1`` temporal offsets.
    """
    wd, wh, ww = window
    sd = OrderedDict()
    for key, value in _strip(state_dict, prefix).items():
        key = key.replace('rel_pos_embed_table',
                          'relative_position_bias_table')
        key = key.replace('relative_coords', 'relative_position_index')
        key = key.replace('.channel_reduction.', '.reduction.')
        if 'relative_position_index' in key or 'attn_mask' in key:
            continue
        sd[key] = value
    sd['patch_embed.proj.weight'] = sd['patch_embed.proj.weight'].unsqueeze(
        2).repeat(1, 1, temporal_patch, 1, 1) / temporal_patch
    area = (2 * wh - 1) * (2 * ww - 1)
    for key in [k for k in sd if 'relative_position_bias_table' in k]:
        table = sd[key]
        length, heads = table.shape
        if length != area:
            side = int(length**0.5)
            table = F.interpolate(
                table.permute(1, 0).view(1, heads, side, side),
                size=(2 * wh - 1, 2 * ww - 1),
                mode='bicubic').view(heads, area).permute(1, 0)
        sd[key] = table.repeat(2 * wd - 1, 1)
    return sd


def _video_window_size(size, window, shift):
    """Video Swin ``get_window_size``: per axis, a map no larger than the
    window becomes the window and is not shifted."""
    use_window, use_shift = list(window), list(shift)
    for axis, length in enumerate(size):
        if length <= window[axis]:
            use_window[axis] = length
            use_shift[axis] = 0
    return tuple(use_window), tuple(use_shift)


def _video_relative_index(window):
    wd, wh, ww = window
    coords = torch.stack(
        torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww),
                       indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2,
                                                            0).contiguous()
    rel[:, :, 0] += wd - 1
    rel[:, :, 1] += wh - 1
    rel[:, :, 2] += ww - 1
    rel[:, :, 0] *= (2 * wh - 1) * (2 * ww - 1)
    rel[:, :, 1] *= 2 * ww - 1
    return rel.sum(-1)


def _video_partition(x, window):
    b, d, h, w, c = x.shape
    x = x.view(b, d // window[0], window[0], h // window[1], window[1],
               w // window[2], window[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, math.prod(window), c)


def _video_reverse(windows, window, b, d, h, w):
    x = windows.view(b, d // window[0], h // window[1], w // window[2],
                     window[0], window[1], window[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def _video_mask(dp, hp, wp, window, shift):
    """Video Swin ``compute_mask``: 27 regions on the padded map."""
    img = torch.zeros(1, dp, hp, wp, 1)
    count = 0
    for d in (slice(-window[0]), slice(-window[0], -shift[0]),
              slice(-shift[0], None)):
        for h in (slice(-window[1]), slice(-window[1], -shift[1]),
                  slice(-shift[1], None)):
            for w in (slice(-window[2]), slice(-window[2], -shift[2]),
                      slice(-shift[2], None)):
                img[:, d, h, w] = count
                count += 1
    regions = _video_partition(img, window).squeeze(-1)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


@torch.no_grad()
def authors_video_swin_forward(sd3d, clips, patch_size=(2, 4, 4),
                               window=(8, 7, 7)):
    """Pooled last-stage features of the authors' Video Swin, (B, C).

    Args:
        sd3d (dict): the output of :func:`inflate_authors_swin`.
        clips (Tensor): (B, 3, T, H, W), multiples of ``patch_size``.
    """
    sd = sd3d
    for axis in range(3):
        assert clips.shape[2 + axis] % patch_size[axis] == 0
    x = F.conv3d(clips, sd['patch_embed.proj.weight'],
                 sd['patch_embed.proj.bias'], stride=patch_size)
    x = x.permute(0, 2, 3, 4, 1)  # B D H W C
    if 'patch_embed.norm.weight' in sd:
        x = _layer_norm(x, sd, 'patch_embed.norm')
    full_index = _video_relative_index(window)
    shift = tuple(s // 2 for s in window)
    depths = _depths(sd)
    for i, depth in enumerate(depths):
        b, d, h, w, c = x.shape
        use_window, use_shift = _video_window_size((d, h, w), window, shift)
        dp, hp, wp = (math.ceil(n / s) * s
                      for n, s in zip((d, h, w), use_window))
        mask = _video_mask(dp, hp, wp, use_window, use_shift)
        n = math.prod(use_window)
        index = full_index[:n, :n]  # Video Swin slices the full index
        heads = _num_heads(sd, i, 'relative_position_bias_table')
        for j in range(depth):
            name = f'layers.{i}.blocks.{j}'
            block_shift = use_shift if j % 2 else (0, 0, 0)
            y = _layer_norm(x, sd, name + '.norm1')
            y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h, 0, dp - d))
            shifted = any(block_shift)
            if shifted:
                y = torch.roll(y, tuple(-s for s in block_shift), (1, 2, 3))
            out = _window_attention(
                _video_partition(y, use_window), sd, name + '.attn', heads,
                index, 'relative_position_bias_table',
                mask if shifted else None)
            y = _video_reverse(out, use_window, b, dp, hp, wp)
            if shifted:
                y = torch.roll(y, block_shift, (1, 2, 3))
            x = x + y[:, :d, :h, :w]
            x = x + _mlp(_layer_norm(x, sd, name + '.norm2'), sd,
                         name + '.mlp')
        if i < len(depths) - 1:
            name = f'layers.{i}.downsample'
            if h % 2 or w % 2:
                x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2],
                           x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], -1)
            if name + '.norm.weight' in sd:
                x = _layer_norm(x, sd, name + '.norm')
            else:  # Video Swin always has it; not loaded, it is LN(1, 0)
                x = F.layer_norm(x, x.shape[-1:], eps=LN_EPS)
            x = _linear(x, sd, name + '.reduction')
    return _layer_norm(x, sd, 'norm').mean((1, 2, 3))

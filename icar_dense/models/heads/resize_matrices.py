# Copyright (c) icar_dense contributors. All rights reserved.
"""The linear maps of mmseg's post-processing as matrices.

Bilinear resizes, the sum / count of sliding windows, the padding crop and
flips act on each class map separately and separably (rows, columns): the
``(out, in)`` matrices built here let :func:`.large_vocab.dense_argmax`
evaluate a class at an output pixel from a few low-resolution positions.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['resize_matrix', 'chain_matrices', 'window_grid']


def resize_matrix(n_in: int, n_out: int, align_corners: bool) -> Tensor:
    """The ``(n_out, n_in)`` weights of a 1-D bilinear resize.

    Obtained by resizing the identity with ``F.interpolate`` (the width
    axis of size 1 stays the identity), so they are the weights mmseg's
    ``resize`` applies along one axis.
    """
    eye = torch.eye(n_in).reshape(1, n_in, n_in, 1)
    out = F.interpolate(
        eye, size=(n_out, 1), mode='bilinear', align_corners=align_corners)
    return out[0, :, :, 0].t().contiguous()


def chain_matrices(low_sizes: Sequence[int], spans: Sequence[Tuple[int, int]],
                   full: int, head_align: bool, crop: Tuple[int, int],
                   flip: bool, out: Optional[int],
                   out_align: bool) -> Tensor:
    """One axis of mmseg's inference + ``postprocess_result`` as a matrix.

    Args:
        low_sizes (Sequence[int]): Low-resolution size of each window band.
        spans (Sequence[tuple[int, int]]): ``(start, end)`` of each band in
            the (padded) input; the band's logits are resized to
            ``end - start`` (``predict_by_feat``) and summed there.
        full (int): Size of the summed map.
        head_align (bool): ``align_corners`` of the decode head.
        crop (tuple[int, int]): Padding removed at ``(start, end)``.
        flip (bool): Whether the axis is flipped.
        out (int, optional): Final size (``ori_shape``); None keeps it.
        out_align (bool): ``align_corners`` of the final resize.

    Returns:
        Tensor: ``(out, sum(low_sizes))`` weights.
    """
    total = sum(low_sizes)
    acc = torch.zeros((full, total))
    count = torch.zeros(full)
    offset = 0
    for size, (start, end) in zip(low_sizes, spans):
        acc[start:end, offset:offset + size] += resize_matrix(
            size, end - start, head_align)
        count[start:end] += 1
        offset += size
    if bool((count == 0).any()):
        raise ValueError('sliding windows do not cover the image')
    acc = acc / count[:, None]
    acc = acc[crop[0]:full - crop[1]]
    if flip:
        acc = acc.flip(0)
    if out is not None:
        acc = resize_matrix(acc.shape[0], out, out_align) @ acc
    return acc


def window_grid(size: Tuple[int, int], crop: Tuple[int, int],
                stride: Tuple[int, int]) -> Tuple[List, List]:
    """Row and column spans of mmseg's ``slide_inference`` windows."""
    spans = []
    for length, c, s in zip(size, crop, stride):
        grids = max(length - c + s - 1, 0) // s + 1
        axis = []
        for i in range(grids):
            a = i * s
            b = min(a + c, length)
            a = max(b - c, 0)
            axis.append((a, b))
        spans.append(axis)
    return spans[0], spans[1]

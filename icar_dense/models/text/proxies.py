# Copyright (c) icar_dense contributors. All rights reserved.
"""Class proxies that replace a classifier's text embeddings (e.g. InMaP's
vision proxies): checked and normalised before a forward uses them."""
from typing import Sequence

import torch

__all__ = ['unit_proxies']


def unit_proxies(proxies: torch.Tensor, rows: Sequence[int], embed_dim: int,
                 source: str) -> torch.Tensor:
    """``proxies`` as float32 unit rows, or a clear error.

    Args:
        proxies (Tensor): ``(C, D)`` (or ``(C + 1, D)`` with the background
            last), one row per class in vocabulary order.
        rows (Sequence[int]): The accepted row counts.
        embed_dim (int): ``D``.
        source (str): Where the vocabulary came from (named in errors).

    Raises:
        TypeError: If ``proxies`` is not a floating point tensor.
        ValueError: On a wrong shape (with a hint for the transposed InMaP
            layout) or non-finite / zero rows.
    """
    if not isinstance(proxies, torch.Tensor) or \
            not proxies.is_floating_point():
        raise TypeError('TextClassifier.set_class_proxies: proxies must '
                        'be a floating point tensor of shape (C, D), got '
                        f'{getattr(proxies, "dtype", type(proxies))}')
    if proxies.dim() != 2 or proxies.shape[0] not in rows or \
            proxies.shape[1] != embed_dim:
        hint = ''
        if proxies.dim() == 2 and proxies.shape[1] in rows and \
                proxies.shape[0] == embed_dim:
            hint = (' (it looks like (D, C), the layout of InMaP '
                    'proxies; pass proxies.t())')
        want = ' or '.join(f'({r}, {embed_dim})' for r in rows)
        raise ValueError(
            f'TextClassifier.set_class_proxies: proxies must have shape '
            f'{want} for {rows[0]} classes (from {source}) and '
            f'embed_dim={embed_dim}'
            f'{" plus the background" if len(rows) == 2 else ""}, got '
            f'{tuple(proxies.shape)}{hint}')
    proxies = proxies.detach().float()
    norms = torch.linalg.vector_norm(proxies, dim=1)
    if not bool(torch.isfinite(proxies).all()) or bool((norms == 0).any()):
        raise ValueError('TextClassifier.set_class_proxies: every proxy '
                         'must be finite and non-zero')
    return proxies / norms[:, None]

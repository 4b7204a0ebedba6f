"""InMaP's intermediate quantities as dense tensors (pure torch).

:func:`~icar_dense.inmap.core.learn_vision_proxies` never materialises an
``n x C`` matrix; these functions do, with the same chunked building blocks,
so that tests and users can look at the pseudo-labels and the update
direction of small sets (and check them against autograd or a dense
reference).
"""
from typing import Optional

import torch
from torch import Tensor

from .checks import (check_col_marginal, check_count, check_hparams,
                     check_matrix, check_positive, check_proxies,
                     resolve_chunk_size)
from .chunked import (ChunkedFeatures, compute_dtype, normalize_columns,
                      prob_stat, sinkhorn_log_v, stable_softmax, threshold)

__all__ = ['sinkhorn_pseudo_labels', 'soft_ce_gradient']


@torch.no_grad()
def sinkhorn_pseudo_labels(features: Tensor,
                           text_proxies: Tensor,
                           *,
                           tau_t: float = 0.01,
                           gamma: float = 0.0,
                           col_marginal: Optional[Tensor] = None,
                           iters: int = 20,
                           alpha: Optional[float] = None,
                           chunk_size: Optional[int] = None) -> Tensor:
    """The InMaP pseudo-labels as a dense ``(n, C)`` matrix.

    For inspection, tests and small sets: unlike ``learn_vision_proxies``
    (the same chunked Sinkhorn, but it never materialises the labels) this
    returns all ``n x C`` values.

    Args:
        features (Tensor): ``(n, d)`` features (L2-normalised inside).
        text_proxies (Tensor): ``(d, C)`` text proxies (normalised inside).
        tau_t (float): Temperature. Default 0.01.
        gamma (float): Marginal exponent (0 = uniform). Default 0.
        col_marginal (Tensor, optional): ``(C,)`` explicit class prior.
        iters (int): Sinkhorn iterations; 0 gives ``softmax(X T / tau_t)``.
        alpha (float, optional): If given, rows with max > alpha become
            one-hot (step 3 of InMaP).
        chunk_size (int, optional): Rows per chunk of the Sinkhorn passes.

    Returns:
        Tensor: ``(n, C)`` pseudo-labels whose rows sum to 1 and whose column
        means approach the target marginal as ``iters`` grows.
    """
    features = check_matrix('features', features)
    text_proxies = check_proxies(features, text_proxies)
    check_hparams(tau_t, 1.0, alpha, gamma, 0, col_marginal)
    check_count('iters', iters)
    dtype = compute_dtype(features.dtype)
    n, num_classes = features.shape[0], text_proxies.shape[1]
    prior = check_col_marginal(col_marginal, num_classes, dtype,
                               features.device)
    feats = ChunkedFeatures(features,
                            resolve_chunk_size(chunk_size, n, num_classes))
    text_scaled = normalize_columns(text_proxies, dtype,
                                    'text_proxies') / tau_t
    log_v, _ = sinkhorn_log_v(feats, text_scaled, iters, gamma, prior)
    labels = torch.cat(
        [stable_softmax(x @ text_scaled + log_v, dim=1) for _, _, x in feats])
    if alpha is not None:
        labels = threshold(labels, alpha)[0]
    return labels


@torch.no_grad()
def soft_ce_gradient(features: Tensor,
                     proxies: Tensor,
                     pseudo_labels: Tensor,
                     *,
                     tau_i: float = 0.04,
                     chunk_size: Optional[int] = None) -> Tensor:
    """The InMaP update direction ``X^T softmax(X W / tau_i) - X^T Y``.

    It equals ``n * tau_i`` times the gradient, with respect to ``W``, of the
    mean soft cross-entropy ``-mean_i sum_c Y_ic log softmax(x_i W /
    tau_i)_c`` when the rows of ``Y`` sum to 1; the step
    ``lr / (n * tau_i)`` undoes that factor. The softmax statistic is the
    same chunked routine ``learn_vision_proxies`` steps with.

    Args:
        features (Tensor): ``(n, d)`` features (L2-normalised inside).
        proxies (Tensor): ``(d, C)`` proxies ``W`` (used as given).
        pseudo_labels (Tensor): ``(n, C)`` targets ``Y``.
        tau_i (float): Temperature. Default 0.04.
        chunk_size (int, optional): Rows per chunk.

    Returns:
        Tensor: ``(d, C)`` direction in the compute dtype.
    """
    features = check_matrix('features', features)
    proxies = check_proxies(features, proxies, 'proxies')
    tau_i = check_positive('tau_i', tau_i)
    n, num_classes = features.shape[0], proxies.shape[1]
    if pseudo_labels.shape != (n, num_classes):
        raise ValueError(f'pseudo_labels must have shape ({n}, '
                         f'{num_classes}), got {tuple(pseudo_labels.shape)}')
    feats = ChunkedFeatures(features,
                            resolve_chunk_size(chunk_size, n, num_classes))
    proxies = proxies.to(feats.dtype)
    labels = pseudo_labels.to(device=feats.device, dtype=feats.dtype)
    xty = proxies.new_zeros(feats.d, num_classes)
    for start, end, x in feats:
        xty.addmm_(x.t(), labels[start:end])
    return prob_stat(feats, proxies / tau_i, num_classes) - xty

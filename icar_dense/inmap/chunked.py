"""Chunked building blocks of InMaP (pure torch).

Every ``n x C`` product of :mod:`icar_dense.inmap.core` goes through these
functions, row chunk by row chunk, keeping only reduced quantities (the
Sinkhorn scaling of the classes, ``d x C`` statistics): that is what bounds
the memory of the learning to the features plus a few chunk buffers. They
are separate from the public functions so that each file reads as one
thing: here the numerics, in ``core`` the algorithm.
"""
import math
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    'compute_dtype', 'ChunkedFeatures', 'normalize_columns', 'shifted_exp',
    'stable_logsumexp', 'stable_softmax', 'sinkhorn_log_v', 'threshold',
    'prob_stat', 'label_stats', 'argmax_pass'
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype InMaP computes in for features stored in ``dtype``."""
    # Half-precision storage is fine, but exp(S / 0.01) and the gradient
    # sums need float32 accumulators; float64 input stays float64 (tests,
    # reference comparisons).
    return torch.float64 if dtype == torch.float64 else torch.float32


class ChunkedFeatures:
    """Row chunks of the features, L2-normalised and in the compute dtype.

    The caller's tensor is never copied as a whole: the inverse row norms
    (``n`` values) are computed once and each chunk is upcast and scaled when
    it is used. That costs ``n x d`` elementwise work per pass, negligible
    next to the ``n x d x C`` matmul of the same pass, and keeps the memory
    at the size of the caller's features.

    Args:
        features (Tensor): ``(n, d)`` features, any floating dtype.
        chunk_size (int): Rows per chunk.

    Raises:
        ValueError: If a row is all zeros or contains inf/NaN.
    """

    def __init__(self, features: Tensor, chunk_size: int) -> None:
        self.raw = features
        self.n, self.d = features.shape
        self.chunk_size = chunk_size
        self.dtype = compute_dtype(features.dtype)
        self.device = features.device
        inv_norm = torch.empty(self.n, dtype=self.dtype, device=self.device)
        for start, end in self.ranges():
            norm = torch.linalg.vector_norm(
                features[start:end].to(self.dtype), dim=1)
            inv_norm[start:end] = norm.reciprocal()
        # One host sync for the whole check. A zero row gives inf, a row
        # with inf/NaN gives 0 or NaN.
        bad = ~(torch.isfinite(inv_norm) & (inv_norm > 0))
        num_bad = int(bad.sum())
        if num_bad:
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f'features: {num_bad} row(s) are all zeros or contain '
                f'inf/NaN (first: row {first}); they cannot be L2-normalised')
        self.inv_norm = inv_norm

    def ranges(self) -> Iterator[Tuple[int, int]]:
        for start in range(0, self.n, self.chunk_size):
            yield start, min(start + self.chunk_size, self.n)

    def chunk(self, start: int, end: int) -> Tensor:
        return (self.raw[start:end].to(self.dtype) *
                self.inv_norm[start:end, None])

    def __iter__(self) -> Iterator[Tuple[int, int, Tensor]]:
        for start, end in self.ranges():
            yield start, end, self.chunk(start, end)


def normalize_columns(proxies: Tensor, dtype: torch.dtype,
                      name: str) -> Tensor:
    """Unit-norm columns in ``dtype``; zero or non-finite columns raise."""
    proxies = proxies.to(dtype)
    norm = torch.linalg.vector_norm(proxies, dim=0)
    if not bool(torch.isfinite(proxies).all()) or bool((norm == 0).any()):
        raise ValueError(f'{name}: every column must be finite and non-zero '
                         'to be L2-normalised')
    return proxies / norm


def shifted_exp(x: Tensor, dim: int) -> Tuple[Tensor, Tensor]:
    """``exp(x - max(x))`` along ``dim``, flushing values below the smallest
    normal float to zero.

    Why not ``torch.logsumexp``/``torch.softmax``: with ``S / 0.01`` most
    entries are far below the row (or column) maximum, and on CPUs ``exp``
    of arguments beyond the underflow threshold takes a slow path (measured
    ~25x slower than for in-range arguments) while denormal results slow
    every later operation. Flushed values are < 1e-37 relative to the
    maximum, far below the resolution of the sums they enter.

    Returns:
        tuple[Tensor, Tensor]: The exponentials (same shape as ``x``) and
        the maxima (``keepdim=True``; 0 where a slice is all ``-inf``).
    """
    top = x.amax(dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = x - top
    floor = math.log(torch.finfo(x.dtype).tiny) + 1.0
    underflow = shifted < floor
    return shifted.clamp_(min=floor).exp_().masked_fill_(underflow, 0), top


def stable_logsumexp(x: Tensor, dim: int) -> Tensor:
    exp, top = shifted_exp(x, dim)
    return exp.sum(dim).log_() + top.squeeze(dim)


def stable_softmax(x: Tensor, dim: int) -> Tensor:
    exp, _ = shifted_exp(x, dim)
    return exp.div_(exp.sum(dim, keepdim=True))


def sinkhorn_log_v(feats: ChunkedFeatures, text_scaled: Tensor, iters: int,
                   gamma: float,
                   col_marginal: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Sinkhorn column scaling of ``P0 = softmax(X T / tau_t) / n``.

    In the factorised form ``P = diag(u) K diag(v)`` with
    ``K = exp(X T / tau_t)``, the row step sets
    ``u_i = 1 / (n sum_j K_ij v_j)``, so after the final row step row ``i``
    of ``n P`` is ``softmax(L_i + log v)`` with ``L = X T / tau_t``: only the
    ``C`` values ``log v`` need to be kept. The column step is
    ``v_j = q_j / sum_i u_i K_ij`` and in the log domain
    ``log sum_i u_i K_ij = logsumexp_i(L_ij - logsumexp_k(L_ik + log v_k))
    - log n``: one chunked pass per iteration. Working in the log domain,
    a class whose probabilities all underflow in float32 keeps a finite
    scaling (the linear-domain reference divides by zero there), and a class
    with a zero target (``q_j = 0``) gets ``log v_j = -inf`` without NaNs.

    Args:
        feats (ChunkedFeatures): Normalised features.
        text_scaled (Tensor): ``(d, C)`` text proxies divided by ``tau_t``.
        iters (int): Sinkhorn iterations (column step + row step each).
        gamma (float): Marginal exponent when ``col_marginal`` is None.
        col_marginal (Tensor | None): ``(C,)`` explicit target (sums to 1).

    Returns:
        tuple[Tensor, Tensor]: ``log_v`` of shape ``(C,)`` (zeros when
        ``iters == 0``) and the target column marginal ``q`` of shape
        ``(C,)``.
    """
    num_classes = text_scaled.shape[1]
    log_n = math.log(feats.n)
    log_v = torch.zeros(num_classes, dtype=feats.dtype, device=feats.device)
    if col_marginal is not None:
        log_q = col_marginal.log()
    elif gamma == 0:
        log_q = torch.full_like(log_v, -math.log(num_classes))
    else:
        log_q = None  # needs the predicted mass, known after the first pass
    for _ in range(iters):
        col_lse = torch.full_like(log_v, -math.inf)
        for _, _, x in feats:
            logits = x @ text_scaled
            row_lse = stable_logsumexp(logits + log_v, dim=1)
            # log(u_i K_ij) + log n, with u from the previous row step.
            col_lse = torch.logaddexp(
                col_lse,
                stable_logsumexp(logits.sub_(row_lse[:, None]), dim=0))
        if log_q is None:
            # First pass (v = 1): the predicted class mass of P0 is
            # exp(col_lse) / n; the target is mass ** gamma, normalised.
            log_q = torch.log_softmax(gamma * (col_lse - log_n), dim=0)
        log_v = log_q - (col_lse - log_n)
    return log_v, log_q.exp()


def threshold(labels: Tensor, alpha: float) -> Tuple[Tensor, Tensor]:
    """Rows of ``labels`` (last dim = classes) whose maximum exceeds
    ``alpha`` become one-hot at their argmax. Returns the new labels and the
    boolean mask of converted rows."""
    top, idx = labels.max(dim=-1, keepdim=True)
    confident = top > alpha
    one_hot = torch.zeros_like(labels).scatter_(-1, idx, 1.0)
    return torch.where(confident, one_hot, labels), confident.squeeze(-1)


def prob_stat(feats: ChunkedFeatures, proxies_scaled: Tensor,
              num_classes: int) -> Tensor:
    """``X^T softmax(X W / tau_i)`` for stacked proxies, chunk by chunk.

    Args:
        feats (ChunkedFeatures): Normalised features.
        proxies_scaled (Tensor): ``(d, V * C)`` proxies of ``V`` variants,
            side by side, already divided by ``tau_i`` (scaling the ``d x C``
            proxies is cheaper than scaling the ``n x C`` logits).
        num_classes (int): ``C``; the softmax runs over each block of ``C``.

    Returns:
        Tensor: ``(d, V * C)`` statistic.
    """
    width = proxies_scaled.shape[1]
    stat_ = proxies_scaled.new_zeros(feats.d, width)
    for _, _, x in feats:
        # One GEMM for all variants shares the read of the chunk. The fused
        # torch.softmax is right here: with tau_i = 0.04 cosine logits span
        # at most 50, far from exp's underflow (unlike S / tau_t).
        logits = (x @ proxies_scaled).view(x.shape[0], -1, num_classes)
        prob = torch.softmax(logits, dim=-1).view(x.shape[0], width)
        stat_.addmm_(x.t(), prob)
    return stat_


def label_stats(
        feats: ChunkedFeatures, text_scaled: Tensor,
        log_vs: Sequence[Optional[Tensor]], alpha: float, want_text_pred: bool
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """One chunked pass computing everything the pseudo-labels feed into.

    Args:
        feats (ChunkedFeatures): Normalised features.
        text_scaled (Tensor): ``(d, C)`` text proxies divided by ``tau_t``.
        log_vs (Sequence[Tensor | None]): Per learned variant, the Sinkhorn
            column scaling (None: plain softmax pseudo-labels).
        alpha (float): One-hot threshold.
        want_text_pred (bool): Also return the text-proxy predictions.

    Returns:
        tuple: ``X^T Y`` of shape ``(d, V, C)``, the summed pseudo-labels of
        shape ``(V, C)``, the number of one-hot rows of shape ``(V,)`` and
        the ``(n,)`` text predictions (or None).
    """
    num_classes = text_scaled.shape[1]
    num_var = len(log_vs)
    dtype, device = feats.dtype, feats.device
    xty = torch.zeros(
        feats.d, num_var * num_classes, dtype=dtype, device=device)
    mass = torch.zeros(num_var, num_classes, dtype=dtype, device=device)
    confident = torch.zeros(num_var, dtype=torch.long, device=device)
    text_pred = (
        torch.empty(feats.n, dtype=torch.long, device=device)
        if want_text_pred else None)
    for start, end, x in feats:
        logits = x @ text_scaled
        if text_pred is not None:
            text_pred[start:end] = logits.argmax(dim=1)
        per_variant = [
            stable_softmax(logits if log_v is None else logits + log_v, dim=1)
            for log_v in log_vs
        ]
        labels = torch.stack(per_variant, dim=1)  # (m, V, C)
        labels, conf = threshold(labels, alpha)
        mass += labels.sum(dim=0)
        confident += conf.sum(dim=0)
        xty.addmm_(x.t(), labels.view(x.shape[0], -1))
    xty = xty.view(feats.d, num_var, num_classes)
    return xty, mass, confident, text_pred


def argmax_pass(feats: ChunkedFeatures, proxies: Tensor,
                num_classes: int) -> Tensor:
    """``(V, n)`` argmax of ``X @ proxies`` for ``(d, V * C)`` proxies."""
    num_var = proxies.shape[1] // num_classes
    pred = torch.empty(num_var, feats.n, dtype=torch.long, device=feats.device)
    for start, end, x in feats:
        logits = (x @ proxies).view(x.shape[0], num_var, num_classes)
        pred[:, start:end] = logits.argmax(dim=-1).t()
    return pred

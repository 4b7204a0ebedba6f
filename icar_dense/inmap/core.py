"""InMaP: transductive refinement of text class proxies into vision proxies.

Implements Qian et al., "Intra-Modal Proxy Learning for Zero-Shot Visual
Categorization with CLIP" (arXiv 2310.19752), in pure torch, for the dense
setting of this package where the "test set" is a large pool of regions,
pixels or clips:

1. ``S = X T``; pseudo-labels ``Y0 = softmax(S / tau_t)``.
2. Optional Sinkhorn refinement of ``Y0`` towards a column (class) marginal:
   uniform, ``(predicted class mass) ** gamma`` or an explicit prior.
3. Rows whose maximum probability exceeds ``alpha`` become one-hot.
4. Vision proxies ``W`` (initialised with ``T``) are learned by full-batch
   projected gradient descent on the soft cross-entropy of
   ``softmax(X W / tau_i)``; columns of ``W`` are re-normalised after every
   step and the step size is halved whenever the gradient norm grows.

Memory is bounded: no ``n x C`` matrix is ever materialised by
:func:`learn_vision_proxies`. Every ``n x C`` product is computed in row
chunks and only reduced quantities are kept: the Sinkhorn scaling vector of
the classes (the factorised form ``P = diag(u) K diag(v)``, where ``u`` never
needs storing because it is a function of ``v`` and the row), the ``d x C``
statistic ``X^T Y`` of the pseudo-labels and the ``d x C`` gradient. With
1M features, 1203 classes and ``d = 256`` the peak memory is the features
themselves plus a few hundred MB of chunk buffers.

All computations run on the device of the inputs in ``float32`` (or
``float64`` when the features are ``float64``), whatever the storage dtype of
the features (``float16``/``bfloat16`` features are upcast chunk by chunk).
On GPUs the matmuls follow torch's float32 matmul precision setting
(``torch.backends.cuda.matmul.allow_tf32``); TF32 perturbs the logits
``S / 0.01`` by ~1e-2, keep it off for exact runs.

Numerical note on the step-size rule (inherited from the published
algorithm): once the gradient norm plateaus, its step-to-step change falls
below the rounding of the norm itself, so rounding noise "grows" the norm
and halves the step again and again: the step size collapses to ~0 and the
proxies freeze, an implicit early stop. In float32 this can happen while the
proxies still move by ~1e-3, so runs that differ only in summation order
(chunk size, BLAS, device) agree to ~1e-3 rather than to rounding; float64
features make runs reproducible to ~1e-13.
"""
import contextlib
import math
import os
import os.path as osp
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'InMaPResult', 'INMAP_VARIANTS', 'learn_vision_proxies',
    'sinkhorn_pseudo_labels', 'soft_ce_gradient', 'predict_with_proxies',
    'save_proxies', 'load_proxies'
]

#: Names of the proxies/predictions :func:`learn_vision_proxies` can return.
#: ``'text'``: the (normalised) text proxies themselves; ``'no_sinkhorn'``:
#: InMaP with plain softmax pseudo-labels; ``'full'``: InMaP with
#: Sinkhorn-refined pseudo-labels.
INMAP_VARIANTS = ('text', 'no_sinkhorn', 'full')
_LEARNED_VARIANTS = ('no_sinkhorn', 'full')

#: Elements of one chunk's ``rows x (variants * C)`` matrix when
#: ``chunk_size`` is None: 2**25 float32 values = 128 MB. A pass holds two
#: (gradient step) to five (pseudo-label pass) such buffers at once; measured
#: on the CPU with 1M x 1203 x 256: +0.63 GB peak RSS over the features.
_AUTO_CHUNK_ELEMENTS = 2**25

_FILE_FORMAT = 'icar_dense.inmap.proxies'
_FILE_VERSION = 1


@dataclass
class InMaPResult:
    """What :func:`learn_vision_proxies` returns.

    Attributes:
        proxies (dict[str, Tensor]): Variant name -> proxies of shape
            ``(d, C)`` (unit-norm columns, compute dtype, on the device of
            the inputs). ``'text'`` holds the normalised text proxies.
        predictions (dict[str, Tensor]): Variant name -> ``(n,)`` int64
            class indices (argmax of ``X @ proxies``).
        col_marginal (Tensor | None): ``(C,)`` target column marginal the
            Sinkhorn refinement used (sums to 1); None when ``'full'`` was
            not requested or ``sinkhorn_iters == 0``.
        pseudo_label_mass (dict[str, Tensor]): Learned variant -> ``(C,)``
            mean pseudo-label per class after thresholding (sums to 1):
            which classes the learning was pushed towards.
        confident_fraction (dict[str, float]): Learned variant -> fraction
            of rows that became one-hot (max probability > ``alpha``).
        grad_norms (dict[str, Tensor]): Learned variant -> ``(iters,)``
            Frobenius norm of the (unscaled) gradient at each step, on CPU.
        lrs (dict[str, Tensor]): Learned variant -> ``(iters,)`` learning
            rate used at each step (after any halving), on CPU.
        timings (dict[str, float]): Wall seconds of the phases
            ``'pseudo_labels'`` (normalisation, Sinkhorn, ``X^T Y``),
            ``'learn'`` (the gradient steps) and ``'predict'``.
        config (dict): The hyper-parameters and sizes of the run (plain
            Python values; :func:`save_proxies` stores it in the meta).
    """

    proxies: Dict[str, Tensor]
    predictions: Dict[str, Tensor]
    col_marginal: Optional[Tensor] = None
    pseudo_label_mass: Dict[str, Tensor] = field(default_factory=dict)
    confident_fraction: Dict[str, float] = field(default_factory=dict)
    grad_norms: Dict[str, Tensor] = field(default_factory=dict)
    lrs: Dict[str, Tensor] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    config: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------
def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number, got {type(value)}')
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite positive number, '
                         f'got {value}')
    return float(value)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {type(value)}')
    if value < 0:
        raise ValueError(f'{name} must be >= 0, got {value}')
    return value


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision storage is fine, but exp(S / 0.01) and the gradient
    # sums need float32 accumulators; float64 input stays float64 (tests,
    # reference comparisons).
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_matrix(name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x)}')
    if x.dim() != 2:
        raise ValueError(f'{name} must be 2-D, got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor, '
                        f'got {x.dtype}')
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f'{name} must not be empty, got shape '
                         f'{tuple(x.shape)}')
    return x


def _check_proxies(features: Tensor,
                   proxies: Any,
                   name: str = 'text_proxies') -> Tensor:
    proxies = _check_matrix(name, proxies)
    d = features.shape[1]
    if proxies.shape[0] != d:
        hint = ''
        if proxies.shape[1] == d:
            hint = (f' (it looks like (C, d); pass {name}.t() — proxies are '
                    'columns, as in `features @ proxies`)')
        raise ValueError(f'{name} must have shape (d, C) = ({d}, C) to '
                         f'match features of shape {tuple(features.shape)}, '
                         f'got {tuple(proxies.shape)}{hint}')
    if proxies.device != features.device:
        raise ValueError(f'features are on {features.device} but {name} '
                         f'are on {proxies.device}; move them to one device')
    return proxies


def _resolve_chunk_size(chunk_size: Optional[int], n: int, width: int) -> int:
    """Rows per chunk; ``width`` is the number of columns of the widest
    ``rows x width`` matrix a chunk creates."""
    if chunk_size is None:
        return max(1, min(n, _AUTO_CHUNK_ELEMENTS // max(width, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f'chunk_size must be an int or None, '
                        f'got {type(chunk_size)}')
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    return min(chunk_size, n)


class _ChunkedFeatures:
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
        self.dtype = _compute_dtype(features.dtype)
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


def _normalize_columns(proxies: Tensor, dtype: torch.dtype,
                       name: str) -> Tensor:
    proxies = proxies.to(dtype)
    norm = torch.linalg.vector_norm(proxies, dim=0)
    if not bool(torch.isfinite(proxies).all()) or bool((norm == 0).any()):
        raise ValueError(f'{name}: every column must be finite and non-zero '
                         'to be L2-normalised')
    return proxies / norm


def _check_fixed(fixed_proxies: Any, num_classes: int,
                 device: torch.device) -> Optional[Tensor]:
    if fixed_proxies is None:
        return None
    if not isinstance(fixed_proxies, Tensor):
        fixed_proxies = torch.as_tensor(fixed_proxies)
    if fixed_proxies.dtype != torch.bool:
        raise TypeError(
            'fixed_proxies must be a boolean mask of shape (C,), got dtype '
            f'{fixed_proxies.dtype}; for indices use '
            '`mask = torch.zeros(C, dtype=torch.bool); mask[idx] = True`')
    if fixed_proxies.shape != (num_classes, ):
        raise ValueError(f'fixed_proxies must have shape ({num_classes},), '
                         f'got {tuple(fixed_proxies.shape)}')
    return fixed_proxies.to(device)


def _check_col_marginal(col_marginal: Any, num_classes: int,
                        dtype: torch.dtype,
                        device: torch.device) -> Optional[Tensor]:
    if col_marginal is None:
        return None
    if not isinstance(col_marginal, Tensor):
        col_marginal = torch.as_tensor(col_marginal)
    if col_marginal.shape != (num_classes, ):
        raise ValueError(f'col_marginal must have shape ({num_classes},), '
                         f'got {tuple(col_marginal.shape)}')
    col_marginal = col_marginal.to(device=device, dtype=dtype)
    finite = bool(torch.isfinite(col_marginal).all())
    if not finite or bool((col_marginal < 0).any()):
        raise ValueError('col_marginal must be finite and non-negative')
    total = col_marginal.sum()
    if not bool(total > 0):
        raise ValueError('col_marginal must have a positive sum')
    return col_marginal / total


def _check_variants(variants: Any) -> Tuple[str, ...]:
    if isinstance(variants, str):
        variants = (variants, )
    variants = tuple(variants)
    if not variants:
        raise ValueError('variants must not be empty')
    unknown = [v for v in variants if v not in INMAP_VARIANTS]
    if unknown:
        raise ValueError(f'unknown variant(s) {unknown}; choose from '
                         f'{INMAP_VARIANTS}')
    if len(set(variants)) != len(variants):
        raise ValueError(f'duplicate variants in {variants}')
    return variants


def _check_hparams(tau_t: float, tau_i: float, alpha: Optional[float],
                   gamma: float, sinkhorn_iters: int,
                   col_marginal: Any) -> None:
    _check_positive('tau_t', tau_t)
    _check_positive('tau_i', tau_i)
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f'alpha must be a number, got {type(alpha)}')
        if not 0 < alpha <= 1:
            raise ValueError(f'alpha must be in (0, 1], got {alpha}')
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f'gamma must be a number, got {type(gamma)}')
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f'gamma must be a finite number >= 0, got {gamma}')
    if gamma > 0 and col_marginal is not None:
        raise ValueError('give either gamma > 0 (marginal from the predicted '
                         'class mass) or col_marginal, not both')
    _check_count('sinkhorn_iters', sinkhorn_iters)


# --------------------------------------------------------------------------
# Chunked building blocks
# --------------------------------------------------------------------------
def _shifted_exp(x: Tensor, dim: int) -> Tuple[Tensor, Tensor]:
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


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    exp, top = _shifted_exp(x, dim)
    return exp.sum(dim).log_() + top.squeeze(dim)


def _softmax(x: Tensor, dim: int) -> Tensor:
    exp, _ = _shifted_exp(x, dim)
    return exp.div_(exp.sum(dim, keepdim=True))


def _sinkhorn_log_v(feats: _ChunkedFeatures, text_scaled: Tensor, iters: int,
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
        feats (_ChunkedFeatures): Normalised features.
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
            row_lse = _logsumexp(logits + log_v, dim=1)
            # log(u_i K_ij) + log n, with u from the previous row step.
            col_lse = torch.logaddexp(
                col_lse, _logsumexp(logits.sub_(row_lse[:, None]), dim=0))
        if log_q is None:
            # First pass (v = 1): the predicted class mass of P0 is
            # exp(col_lse) / n; the target is mass ** gamma, normalised.
            log_q = torch.log_softmax(gamma * (col_lse - log_n), dim=0)
        log_v = log_q - (col_lse - log_n)
    return log_v, log_q.exp()


def _threshold(labels: Tensor, alpha: float) -> Tuple[Tensor, Tensor]:
    """Rows of ``labels`` (last dim = classes) whose maximum exceeds
    ``alpha`` become one-hot at their argmax. Returns the new labels and the
    boolean mask of converted rows."""
    top, idx = labels.max(dim=-1, keepdim=True)
    confident = top > alpha
    one_hot = torch.zeros_like(labels).scatter_(-1, idx, 1.0)
    return torch.where(confident, one_hot, labels), confident.squeeze(-1)


def _prob_stat(feats: _ChunkedFeatures, proxies_scaled: Tensor,
               num_classes: int) -> Tensor:
    """``X^T softmax(X W / tau_i)`` for stacked proxies, chunk by chunk.

    Args:
        feats (_ChunkedFeatures): Normalised features.
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


def _label_stats(
        feats: _ChunkedFeatures, text_scaled: Tensor,
        log_vs: Sequence[Optional[Tensor]], alpha: float, want_text_pred: bool
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """One chunked pass computing everything the pseudo-labels feed into.

    Args:
        feats (_ChunkedFeatures): Normalised features.
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
            _softmax(logits if log_v is None else logits + log_v, dim=1)
            for log_v in log_vs
        ]
        labels = torch.stack(per_variant, dim=1)  # (m, V, C)
        labels, conf = _threshold(labels, alpha)
        mass += labels.sum(dim=0)
        confident += conf.sum(dim=0)
        xty.addmm_(x.t(), labels.view(x.shape[0], -1))
    xty = xty.view(feats.d, num_var, num_classes)
    return xty, mass, confident, text_pred


def _argmax_pass(feats: _ChunkedFeatures, proxies: Tensor,
                 num_classes: int) -> Tensor:
    """``(V, n)`` argmax of ``X @ proxies`` for ``(d, V * C)`` proxies."""
    num_var = proxies.shape[1] // num_classes
    pred = torch.empty(num_var, feats.n, dtype=torch.long, device=feats.device)
    for start, end, x in feats:
        logits = (x @ proxies).view(x.shape[0], num_var, num_classes)
        pred[:, start:end] = logits.argmax(dim=-1).t()
    return pred


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar (stderr), or a no-op object when disabled/unavailable."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is a runtime requirement; stay usable
            pass
        else:
            return tqdm(
                total=total,
                desc='InMaP proxy learning',
                unit='it',
                dynamic_ncols=True)
    return contextlib.nullcontext(_NoBar())


class _NoBar:

    def update(self, n: int = 1) -> None:
        pass


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------
@torch.no_grad()
def learn_vision_proxies(features: Tensor,
                         text_proxies: Tensor,
                         *,
                         tau_t: float = 0.01,
                         tau_i: float = 0.04,
                         alpha: float = 0.6,
                         gamma: float = 0.0,
                         col_marginal: Optional[Tensor] = None,
                         sinkhorn_iters: int = 20,
                         iters: int = 2000,
                         lr: float = 10.0,
                         chunk_size: Optional[int] = None,
                         fixed_proxies: Optional[Tensor] = None,
                         variants: Sequence[str] = INMAP_VARIANTS,
                         progress: bool = True) -> InMaPResult:
    """Learn InMaP vision proxies from unlabeled features (transductive).

    Features are L2-normalised row-wise and text proxies column-wise before
    use (unit-norm inputs are unchanged up to rounding): the method is
    defined on cosine similarities, and normalising is cheaper for callers
    than an error. Rows that cannot be normalised (all zeros, inf/NaN) raise.

    Pseudo-labels for ``'no_sinkhorn'`` are ``softmax(X T / tau_t)``; for
    ``'full'`` they are refined by ``sinkhorn_iters`` Sinkhorn iterations
    towards the column marginal: uniform (``gamma == 0``), proportional to
    ``(predicted class mass) ** gamma`` (``gamma > 0``; mass of the initial
    softmax) or ``col_marginal`` (e.g. a pixel class prior). Rows whose
    maximum exceeds ``alpha`` then become one-hot. Proxies start from the
    text proxies and take ``iters`` steps
    ``W <- normalize_columns(W - lr / (n * tau_i) * G)`` with
    ``G = X^T softmax(X W / tau_i) - X^T Y``; ``lr`` (kept per variant) is
    halved at a step whose ``||G||`` exceeds the previous step's. Both
    learned variants are optimised together with one GEMM per chunk, and the
    step-size logic stays on the device (no host sync per step).

    Args:
        features (Tensor): ``(n, d)`` features of the unlabeled set (regions,
            pixels, clips), any floating dtype, any device.
        text_proxies (Tensor): ``(d, C)`` text class proxies (columns), same
            device as ``features``.
        tau_t (float): Temperature of the text pseudo-labels. Default 0.01.
        tau_i (float): Temperature of the vision proxies. Default 0.04.
        alpha (float): Rows with max probability > alpha become one-hot;
            in (0, 1], 1 disables it. Default 0.6.
        gamma (float): Exponent of the predicted-mass marginal; 0 = uniform.
            Default 0.
        col_marginal (Tensor, optional): ``(C,)`` non-negative class prior
            for Sinkhorn (normalised to sum 1); exclusive with ``gamma > 0``.
        sinkhorn_iters (int): Sinkhorn iterations for ``'full'``; 0 makes
            ``'full'`` equal to ``'no_sinkhorn'``. Default 20.
        iters (int): Gradient steps. Default 2000.
        lr (float): Initial learning rate. Default 10.
        chunk_size (int, optional): Rows per chunk of every ``n x C``
            product; None picks the largest chunk whose ``rows x (V * C)``
            matrix has at most 2**25 elements (128 MB in float32).
        fixed_proxies (Tensor, optional): ``(C,)`` bool mask of columns that
            are never updated (e.g. a detector's background proxy); they
            still compete in the softmax and are returned equal to the
            normalised input column. The gradient norm used for the step
            size only counts the free columns.
        variants (Sequence[str]): Which of ``'text'``, ``'no_sinkhorn'``,
            ``'full'`` to compute. Default all three.
        progress (bool): Show a tqdm progress bar over the steps.

    Returns:
        InMaPResult: Proxies and predictions per variant, plus the
        pseudo-label statistics, step-size history, timings and config.

    Raises:
        TypeError: Non-tensor inputs, non-floating dtypes, bad option types.
        ValueError: Shape or device mismatch, non-normalisable rows or
            columns, temperatures or ``lr`` not > 0, ``alpha`` outside
            (0, 1], negative ``gamma``, bad ``col_marginal``.
    """
    features = _check_matrix('features', features)
    text_proxies = _check_proxies(features, text_proxies)
    _check_hparams(tau_t, tau_i, alpha, gamma, sinkhorn_iters, col_marginal)
    _check_positive('lr', lr)
    _check_count('iters', iters)
    variants = _check_variants(variants)
    n, d = features.shape
    num_classes = text_proxies.shape[1]
    dtype = _compute_dtype(features.dtype)
    device = features.device
    fixed = _check_fixed(fixed_proxies, num_classes, device)
    prior = _check_col_marginal(col_marginal, num_classes, dtype, device)
    learned = [v for v in _LEARNED_VARIANTS if v in variants]
    num_var = len(learned)
    chunk = _resolve_chunk_size(chunk_size, n, max(num_var, 1) * num_classes)

    timings = {}
    t0 = time.perf_counter()
    feats = _ChunkedFeatures(features, chunk)
    text = _normalize_columns(text_proxies, dtype, 'text_proxies')
    text_scaled = text / tau_t

    result = InMaPResult(proxies={}, predictions={})
    result.config = dict(
        n=n,
        d=d,
        num_classes=num_classes,
        tau_t=float(tau_t),
        tau_i=float(tau_i),
        alpha=float(alpha),
        gamma=float(gamma),
        col_marginal=prior is not None,
        sinkhorn_iters=sinkhorn_iters,
        iters=iters,
        lr=float(lr),
        chunk_size=chunk,
        num_fixed=0 if fixed is None else int(fixed.sum()),
        variants=list(variants))
    if 'text' in variants:
        result.proxies['text'] = text
    if not learned:
        result.predictions['text'] = _argmax_pass(feats, text, num_classes)[0]
        _sync(device)
        timings['predict'] = time.perf_counter() - t0
        result.timings = timings
        return result

    # ---- pseudo-labels: Sinkhorn scaling, then X^T Y in one pass ----
    log_vs: List[Optional[Tensor]] = []
    for name in learned:
        if name == 'full' and sinkhorn_iters > 0:
            log_v, target = _sinkhorn_log_v(feats, text_scaled, sinkhorn_iters,
                                            gamma, prior)
            result.col_marginal = target
            log_vs.append(log_v)
        else:
            log_vs.append(None)
    xty, mass, confident, text_pred = _label_stats(feats, text_scaled, log_vs,
                                                   alpha, 'text' in variants)
    if text_pred is not None:
        result.predictions['text'] = text_pred
    for k, name in enumerate(learned):
        result.pseudo_label_mass[name] = mass[k] / n
        result.confident_fraction[name] = float(confident[k]) / n
    _sync(device)
    timings['pseudo_labels'] = time.perf_counter() - t0

    # ---- projected gradient descent, all learned variants at once ----
    t1 = time.perf_counter()
    # (d, V, C) so that .view(d, V * C) is the GEMM operand without copies.
    init = text[:, None, :].expand(d, num_var, num_classes).contiguous()
    proxies = init.clone()
    free = None if fixed is None else (~fixed).to(dtype)
    step_lr = torch.full((num_var, ), float(lr), dtype=dtype, device=device)
    prev_norm = torch.full_like(step_lr, math.inf)
    norm_hist = torch.empty(iters, num_var, dtype=dtype, device=device)
    lr_hist = torch.empty_like(norm_hist)
    step_scale = 1.0 / (n * tau_i)
    with _progress_bar(iters, progress) as bar:
        for it in range(iters):
            grad = _prob_stat(feats, (proxies / tau_i).view(d, -1),
                              num_classes).view_as(xty) - xty
            if free is not None:
                grad *= free  # projection: fixed columns never move
            grad_norm = torch.linalg.vector_norm(grad, dim=(0, 2))
            # Halve when the gradient grows (a sign of overshooting); a
            # device-side where() avoids a host sync per step.
            step_lr = torch.where(grad_norm > prev_norm, step_lr * 0.5,
                                  step_lr)
            prev_norm = grad_norm
            norm_hist[it] = grad_norm
            lr_hist[it] = step_lr
            proxies = F.normalize(
                proxies - (step_lr * step_scale).view(1, -1, 1) * grad, dim=0)
            if fixed is not None:
                # Exactly the input column, not a re-normalised copy.
                proxies = torch.where(fixed, init, proxies)
            bar.update(1)
    _sync(device)
    timings['learn'] = time.perf_counter() - t1

    t2 = time.perf_counter()
    pred = _argmax_pass(feats, proxies.view(d, -1), num_classes)
    for k, name in enumerate(learned):
        result.proxies[name] = proxies[:, k].contiguous()
        result.predictions[name] = pred[k]
        result.grad_norms[name] = norm_hist[:, k].cpu()
        result.lrs[name] = lr_hist[:, k].cpu()
    _sync(device)
    timings['predict'] = time.perf_counter() - t2
    result.timings = timings
    return result


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

    For inspection, tests and small sets: unlike
    :func:`learn_vision_proxies` (which uses the same chunked Sinkhorn but
    never materialises the labels) this returns all ``n x C`` values.

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
    features = _check_matrix('features', features)
    text_proxies = _check_proxies(features, text_proxies)
    _check_hparams(tau_t, 1.0, alpha, gamma, 0, col_marginal)
    _check_count('iters', iters)
    dtype = _compute_dtype(features.dtype)
    n, num_classes = features.shape[0], text_proxies.shape[1]
    prior = _check_col_marginal(col_marginal, num_classes, dtype,
                                features.device)
    feats = _ChunkedFeatures(features,
                             _resolve_chunk_size(chunk_size, n, num_classes))
    text_scaled = _normalize_columns(text_proxies, dtype,
                                     'text_proxies') / tau_t
    log_v, _ = _sinkhorn_log_v(feats, text_scaled, iters, gamma, prior)
    labels = torch.cat(
        [_softmax(x @ text_scaled + log_v, dim=1) for _, _, x in feats])
    if alpha is not None:
        labels = _threshold(labels, alpha)[0]
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
    same chunked routine :func:`learn_vision_proxies` steps with.

    Args:
        features (Tensor): ``(n, d)`` features (L2-normalised inside).
        proxies (Tensor): ``(d, C)`` proxies ``W`` (used as given).
        pseudo_labels (Tensor): ``(n, C)`` targets ``Y``.
        tau_i (float): Temperature. Default 0.04.
        chunk_size (int, optional): Rows per chunk.

    Returns:
        Tensor: ``(d, C)`` direction in the compute dtype.
    """
    features = _check_matrix('features', features)
    proxies = _check_proxies(features, proxies, 'proxies')
    tau_i = _check_positive('tau_i', tau_i)
    n, num_classes = features.shape[0], proxies.shape[1]
    if pseudo_labels.shape != (n, num_classes):
        raise ValueError(f'pseudo_labels must have shape ({n}, '
                         f'{num_classes}), got {tuple(pseudo_labels.shape)}')
    feats = _ChunkedFeatures(features,
                             _resolve_chunk_size(chunk_size, n, num_classes))
    proxies = proxies.to(feats.dtype)
    labels = pseudo_labels.to(device=feats.device, dtype=feats.dtype)
    xty = proxies.new_zeros(feats.d, num_classes)
    for start, end, x in feats:
        xty.addmm_(x.t(), labels[start:end])
    return _prob_stat(feats, proxies / tau_i, num_classes) - xty


@torch.no_grad()
def predict_with_proxies(features: Tensor,
                         proxies: Tensor,
                         *,
                         chunk_size: Optional[int] = None) -> Tensor:
    """Classify new features with saved proxies (inductive use).

    Args:
        features (Tensor): ``(n, d)`` features.
        proxies (Tensor): ``(d, C)`` proxies, e.g. from :func:`load_proxies`
            (moved to the features' device).
        chunk_size (int, optional): Rows per chunk.

    Returns:
        Tensor: ``(n,)`` int64 argmax of ``features @ proxies``.
    """
    features = _check_matrix('features', features)
    proxies = _check_matrix('proxies', proxies).to(features.device)
    proxies = _check_proxies(features, proxies, 'proxies')
    n, num_classes = features.shape[0], proxies.shape[1]
    feats = _ChunkedFeatures(features,
                             _resolve_chunk_size(chunk_size, n, num_classes))
    return _argmax_pass(feats, proxies.to(feats.dtype), num_classes)[0]


# --------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """Check (recursively) that ``value`` loads under ``weights_only=True``;
    tensors are moved to the CPU, tuples become lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise TypeError(f'{where}: keys must be str, got {key!r}')
            out[key] = _plain(v, f'{where}[{key!r}]')
        return out
    raise TypeError(
        f'{where}: {type(value).__name__} cannot be saved; use None, bool, '
        'int, float, str, list, dict or torch.Tensor (the file is loaded '
        'with weights_only=True)')


def save_proxies(path: Union[str, os.PathLike],
                 proxies: Union[Tensor, Mapping[str, Tensor], InMaPResult],
                 class_names: Optional[Sequence[str]] = None,
                 meta: Optional[Mapping[str, Any]] = None) -> None:
    """Save learned proxies for reuse on new data.

    The file is a ``torch.save`` of plain tensors, lists and dicts (loadable
    with ``weights_only=True``), written to a temporary file in the same
    directory and moved into place with ``os.replace``, so readers never see
    a partial file.

    Args:
        path (str | PathLike): Destination file.
        proxies (Tensor | Mapping[str, Tensor] | InMaPResult): One ``(d, C)``
            tensor, a dict of them (e.g. ``result.proxies``), or a result
            whose ``proxies`` are saved and whose ``config`` is added to the
            meta under ``'inmap'``.
        class_names (Sequence[str], optional): ``C`` class names.
        meta (Mapping, optional): Extra plain data (str keys; None, bool,
            int, float, str, list, dict, tensor values).

    Raises:
        TypeError: Values that ``weights_only`` loading would refuse.
        ValueError: Non-2-D proxies, differing ``C`` among them, or a
            ``class_names`` length that is not ``C``.
    """
    meta = {} if meta is None else dict(meta)
    if isinstance(proxies, InMaPResult):
        meta.setdefault('inmap', dict(proxies.config))
        proxies = proxies.proxies
    single = isinstance(proxies, Tensor)
    table = {'proxies': proxies} if single else dict(proxies)
    if not table:
        raise ValueError('no proxies to save')
    sizes = set()
    for name, value in table.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise TypeError('proxies must be a Tensor or a dict of str -> '
                            f'Tensor, got {name!r}: {type(value)}')
        if value.dim() != 2:
            raise ValueError(f'proxies {name!r} must be (d, C), got shape '
                             f'{tuple(value.shape)}')
        sizes.add(value.shape[1])
    if len(sizes) != 1:
        raise ValueError(f'all proxies must have the same C, got {sizes}')
    if class_names is not None:
        if isinstance(class_names,
                      str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError('class_names must be a sequence of str')
        class_names = list(class_names)
        if len(class_names) not in sizes:
            raise ValueError(f'{len(class_names)} class names for '
                             f'{sizes.pop()} proxies')
    payload = dict(
        format=_FILE_FORMAT,
        version=_FILE_VERSION,
        single=single,
        proxies={
            k: v.detach().cpu().contiguous()
            for k, v in table.items()
        },
        class_names=class_names,
        meta=_plain(meta, 'meta'))

    path = os.fspath(path)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp files are 0600; keep the mode of a file being replaced,
        # else use the usual 0644.
        mode = (
            stat.S_IMODE(os.stat(path).st_mode) if osp.exists(path) else 0o644)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_proxies(
        path: Union[str, os.PathLike],
        map_location: Union[str, torch.device] = 'cpu') -> Dict[str, Any]:
    """Load proxies written by :func:`save_proxies` (``weights_only=True``).

    Args:
        path (str | PathLike): File to read.
        map_location (str | torch.device): Where to put the tensors.

    Returns:
        dict: ``proxies`` (a Tensor if a single tensor was saved, else a
        dict of str -> Tensor), ``class_names`` (list[str] | None) and
        ``meta`` (dict).

    Raises:
        ValueError: If the file was not written by :func:`save_proxies`.
    """
    from icar_dense.utils.checkpoint import load_checkpoint_file

    # the same safe load and clear errors as every checkpoint
    payload = load_checkpoint_file(os.fspath(path), map_location)
    if not isinstance(payload, dict) or payload.get('format') != _FILE_FORMAT:
        raise ValueError(f'{path} is not an InMaP proxies file '
                         f'(written by save_proxies)')
    if payload.get('version', 0) > _FILE_VERSION:
        raise ValueError(f'{path} has format version {payload["version"]}; '
                         f'this code reads up to {_FILE_VERSION}')
    proxies = payload['proxies']
    if payload['single']:
        proxies = proxies['proxies']
    return dict(
        proxies=proxies,
        class_names=payload['class_names'],
        meta=payload['meta'])

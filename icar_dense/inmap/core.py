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

Layout: this file holds the algorithm (:func:`learn_vision_proxies`) and
the inductive :func:`predict_with_proxies`; the chunked numerics are in
:mod:`~icar_dense.inmap.chunked`, the checks of inputs and options in
:mod:`~icar_dense.inmap.checks`, the dense pseudo-labels and gradient (for
inspection and tests) in :mod:`~icar_dense.inmap.dense` and the proxies
files in :mod:`~icar_dense.inmap.io`.
"""
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (INMAP_VARIANTS, LEARNED_VARIANTS, check_col_marginal,
                     check_fixed, check_learning_options, check_matrix,
                     check_proxies, resolve_chunk_size)
from .chunked import (ChunkedFeatures, argmax_pass, compute_dtype, label_stats,
                      normalize_columns, prob_stat, sinkhorn_log_v)

__all__ = [
    'InMaPResult', 'INMAP_VARIANTS', 'learn_vision_proxies',
    'predict_with_proxies'
]


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
    features = check_matrix('features', features)
    text_proxies = check_proxies(features, text_proxies)
    variants = check_learning_options(
        tau_t=tau_t,
        tau_i=tau_i,
        alpha=alpha,
        gamma=gamma,
        col_marginal=col_marginal,
        sinkhorn_iters=sinkhorn_iters,
        iters=iters,
        lr=lr,
        chunk_size=chunk_size,
        variants=variants)
    n, d = features.shape
    num_classes = text_proxies.shape[1]
    dtype = compute_dtype(features.dtype)
    device = features.device
    fixed = check_fixed(fixed_proxies, num_classes, device)
    prior = check_col_marginal(col_marginal, num_classes, dtype, device)
    learned = [v for v in LEARNED_VARIANTS if v in variants]
    num_var = len(learned)
    chunk = resolve_chunk_size(chunk_size, n, max(num_var, 1) * num_classes)

    timings = {}
    t0 = time.perf_counter()
    feats = ChunkedFeatures(features, chunk)
    text = normalize_columns(text_proxies, dtype, 'text_proxies')
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
        result.predictions['text'] = argmax_pass(feats, text, num_classes)[0]
        _sync(device)
        timings['predict'] = time.perf_counter() - t0
        result.timings = timings
        return result

    # ---- pseudo-labels: Sinkhorn scaling, then X^T Y in one pass ----
    log_vs: List[Optional[Tensor]] = []
    for name in learned:
        if name == 'full' and sinkhorn_iters > 0:
            log_v, target = sinkhorn_log_v(feats, text_scaled, sinkhorn_iters,
                                           gamma, prior)
            result.col_marginal = target
            log_vs.append(log_v)
        else:
            log_vs.append(None)
    xty, mass, confident, text_pred = label_stats(feats, text_scaled, log_vs,
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
            grad = prob_stat(feats, (proxies / tau_i).view(d, -1),
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
    pred = argmax_pass(feats, proxies.view(d, -1), num_classes)
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
    features = check_matrix('features', features)
    proxies = check_matrix('proxies', proxies).to(features.device)
    proxies = check_proxies(features, proxies, 'proxies')
    n, num_classes = features.shape[0], proxies.shape[1]
    feats = ChunkedFeatures(features,
                            resolve_chunk_size(chunk_size, n, num_classes))
    return argmax_pass(feats, proxies.to(feats.dtype), num_classes)[0]

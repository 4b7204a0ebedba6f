"""Checks of InMaP inputs and options (pure Python and torch).

One place for every check, so that ``learn_vision_proxies`` (``core``) and
``InMaPTestLoop`` (``loop``) refuse the same values with the same words:
the loop calls :func:`check_learning_options` when it is built, before a
whole test pass is spent, and the learning calls it again on the same
values (cheap) when it starts.
"""
import math
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    'INMAP_VARIANTS', 'LEARNED_VARIANTS', 'check_positive', 'check_count',
    'check_matrix', 'check_proxies', 'check_fixed', 'check_col_marginal',
    'check_variants', 'check_learning_options', 'resolve_chunk_size',
    'check_choice', 'check_optional_int'
]

#: Names of the proxies/predictions ``learn_vision_proxies`` can return.
#: ``'text'``: the (normalised) text proxies themselves; ``'no_sinkhorn'``:
#: InMaP with plain softmax pseudo-labels; ``'full'``: InMaP with
#: Sinkhorn-refined pseudo-labels.
INMAP_VARIANTS = ('text', 'no_sinkhorn', 'full')
#: The variants that are learned (all but ``'text'``), in learning order.
LEARNED_VARIANTS = ('no_sinkhorn', 'full')

#: Elements of one chunk's ``rows x (variants * C)`` matrix when
#: ``chunk_size`` is None: 2**25 float32 values = 128 MB. A pass holds two
#: (gradient step) to five (pseudo-label pass) such buffers at once; measured
#: on the CPU with 1M x 1203 x 256: +0.63 GB peak RSS over the features.
AUTO_CHUNK_ELEMENTS = 2**25


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_positive(name: str, value: float) -> float:
    """A finite number > 0, as a float."""
    if not _is_number(value):
        raise TypeError(f'{name} must be a number, got {type(value)}')
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite positive number, '
                         f'got {value}')
    return float(value)


def check_count(name: str, value: int) -> int:
    """An int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {type(value)}')
    if value < 0:
        raise ValueError(f'{name} must be >= 0, got {value}')
    return value


def check_optional_int(name: str, value: Optional[int], low: int) -> None:
    """None or an int >= ``low`` (a budget such as ``max_per_image``)."""
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, int) or value < low):
        raise ValueError(f'{name} must be an int >= {low}, got {value!r}')


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` is one of ``choices`` (named in the error)."""
    if value not in choices:
        names = [repr(c) for c in choices]
        allowed = ' or '.join([', '.join(names[:-1]), names[-1]]) \
            if len(names) > 1 else names[0]
        raise ValueError(f'{name} must be {allowed}, got {value!r}')


def check_matrix(name: str, x: Any) -> Tensor:
    """A non-empty 2-D floating point tensor."""
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


def check_proxies(features: Tensor,
                  proxies: Any,
                  name: str = 'text_proxies') -> Tensor:
    """``(d, C)`` proxies matching ``(n, d)`` features, on their device."""
    proxies = check_matrix(name, proxies)
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


def resolve_chunk_size(chunk_size: Optional[int], n: int, width: int) -> int:
    """Rows per chunk; ``width`` is the number of columns of the widest
    ``rows x width`` matrix a chunk creates."""
    if chunk_size is None:
        return max(1, min(n, AUTO_CHUNK_ELEMENTS // max(width, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f'chunk_size must be an int or None, '
                        f'got {type(chunk_size)}')
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    return min(chunk_size, n)


def check_fixed(fixed_proxies: Any, num_classes: int,
                device: torch.device) -> Optional[Tensor]:
    """None or a ``(C,)`` boolean mask on ``device``."""
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


def check_col_marginal(col_marginal: Any, num_classes: int, dtype: torch.dtype,
                       device: torch.device) -> Optional[Tensor]:
    """None or a ``(C,)`` non-negative prior, normalised to sum 1."""
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


def check_variants(variants: Any) -> Tuple[str, ...]:
    """A non-empty tuple of distinct names from :data:`INMAP_VARIANTS`."""
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


def check_hparams(tau_t: float, tau_i: float, alpha: Optional[float],
                  gamma: float, sinkhorn_iters: int,
                  col_marginal: Any) -> None:
    """The pseudo-label options (shared with ``sinkhorn_pseudo_labels``,
    which has no ``tau_i``/``lr``; pass 1.0 and 0 for those)."""
    check_positive('tau_t', tau_t)
    check_positive('tau_i', tau_i)
    if alpha is not None:
        if not _is_number(alpha):
            raise TypeError(f'alpha must be a number, got {type(alpha)}')
        if not 0 < alpha <= 1:
            raise ValueError(f'alpha must be in (0, 1], got {alpha}')
    if not _is_number(gamma):
        raise TypeError(f'gamma must be a number, got {type(gamma)}')
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f'gamma must be a finite number >= 0, got {gamma}')
    if gamma > 0 and col_marginal is not None:
        raise ValueError('give either gamma > 0 (marginal from the predicted '
                         'class mass) or col_marginal, not both')
    check_count('sinkhorn_iters', sinkhorn_iters)


def check_learning_options(*,
                           tau_t: float = 0.01,
                           tau_i: float = 0.04,
                           alpha: float = 0.6,
                           gamma: float = 0.0,
                           col_marginal: Any = None,
                           sinkhorn_iters: int = 20,
                           iters: int = 2000,
                           lr: float = 10.0,
                           chunk_size: Optional[int] = None,
                           variants: Any = INMAP_VARIANTS) -> Tuple[str, ...]:
    """Check the options of ``learn_vision_proxies`` that do not depend on
    the data (everything but the contents of ``col_marginal``).

    Returns:
        tuple[str]: The variants, as a tuple.

    Raises:
        TypeError: An option of the wrong type.
        ValueError: An option out of range (the message names it).
    """
    check_hparams(tau_t, tau_i, alpha, gamma, sinkhorn_iters, col_marginal)
    check_positive('lr', lr)
    check_count('iters', iters)
    variants = check_variants(variants)
    resolve_chunk_size(chunk_size, 1, 1)
    return variants

"""InMaP: proxy learning (``core``, pure torch) and its evaluation loop."""
from .core import (INMAP_VARIANTS, InMaPResult, learn_vision_proxies,
                   load_proxies, predict_with_proxies, save_proxies,
                   sinkhorn_pseudo_labels, soft_ce_gradient)

__all__ = [
    'INMAP_VARIANTS', 'InMaPResult', 'learn_vision_proxies', 'load_proxies',
    'predict_with_proxies', 'save_proxies', 'sinkhorn_pseudo_labels',
    'soft_ce_gradient'
]
from .evaluation import InMaPTestLoop, enable_inmap  # noqa: F401,E402

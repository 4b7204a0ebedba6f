"""InMaP: proxy learning (pure torch) and its generic test loop.

* ``core``: :func:`learn_vision_proxies` and :func:`predict_with_proxies`
  (with ``chunked`` numerics, ``checks`` and the ``dense`` inspection
  functions), pure torch;
* ``io``: proxies files;
* ``loop``: :class:`InMaPTestLoop` (mmengine ``LOOPS``), which knows no
  task: ``collectors`` registers one feature collector per task in
  :data:`INMAP_COLLECTORS`; ``learner`` learns on rank 0; ``config`` holds
  the config switch :func:`enable_inmap`.
"""
from .checks import INMAP_VARIANTS, check_learning_options
from .collectors import (INMAP_COLLECTORS, BaseFeatureCollector, sample_pixels)
from .config import enable_inmap, loop_options
from .core import InMaPResult, learn_vision_proxies, predict_with_proxies
from .dense import sinkhorn_pseudo_labels, soft_ce_gradient
from .io import (load_classifier_proxies, load_proxies,
                 save_classifier_proxies, save_proxies)
from .learner import ProxyLearner
from .loop import InMaPTestLoop

__all__ = [
    'INMAP_VARIANTS', 'InMaPResult', 'learn_vision_proxies', 'load_proxies',
    'predict_with_proxies', 'save_proxies', 'sinkhorn_pseudo_labels',
    'soft_ce_gradient', 'check_learning_options', 'INMAP_COLLECTORS',
    'BaseFeatureCollector', 'sample_pixels', 'enable_inmap', 'loop_options',
    'load_classifier_proxies', 'save_classifier_proxies', 'ProxyLearner',
    'InMaPTestLoop'
]

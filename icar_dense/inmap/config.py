"""The config switch of InMaP: ``inmap=dict(...)`` -> ``InMaPTestLoop``."""
import copy
import inspect
from typing import List

from mmengine.runner import TestLoop

from .collectors import collector_options
from .learner import ProxyLearner
from .loop import InMaPTestLoop

__all__ = ['enable_inmap', 'loop_options']


def loop_options() -> List[str]:
    """Every option of :class:`InMaPTestLoop`: the keys a config's
    ``inmap=dict(...)`` may hold (the loop's own, the learning options of
    :class:`ProxyLearner` and those of every registered collector)."""
    own = [
        p for p in inspect.signature(InMaPTestLoop.__init__).parameters
        if p not in ('self', 'runner', 'dataloader', 'evaluator', 'options')
    ]
    learner = [
        p for p in inspect.signature(ProxyLearner.__init__).parameters
        if p not in ('self', 'seed')
    ]
    return own + learner + list(collector_options())


def enable_inmap(cfg, force: bool = False):
    """Replace ``cfg.test_cfg`` by :class:`InMaPTestLoop` when asked.

    Asked means ``cfg.inmap`` is a dict (``inmap=dict()`` takes the
    defaults) or ``force`` is True (``tools/test.py --inmap``).  Its keys
    are the loop's options; ``fp16`` of the current ``test_cfg`` is kept.

    Args:
        cfg (Config): The test config (changed in place).
        force (bool): Enable with the defaults when ``cfg`` has no
            ``inmap``.

    Returns:
        Config: ``cfg``.

    Raises:
        TypeError: ``inmap`` is not a dict.
        KeyError: Unknown option names (listing the known ones).
        ValueError: ``test_cfg`` is another special loop (e.g.
            ``MultiSplitTestLoop``), which InMaP cannot wrap.
    """
    options = cfg.get('inmap', None)
    if options is None or options is False:
        if not force:
            return cfg
        options = {}
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f'inmap must be a dict of InMaPTestLoop options, '
                        f'got {type(options).__name__}')
    allowed = loop_options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise KeyError(f'inmap: unknown option(s) {unknown}; known: '
                       f'{allowed}')
    test_cfg = dict(cfg.get('test_cfg') or {})
    loop_type = test_cfg.pop('type', 'TestLoop')
    if loop_type not in ('TestLoop', 'InMaPTestLoop', TestLoop, InMaPTestLoop):
        raise ValueError(
            f'inmap: the config tests with {loop_type!r}; InMaPTestLoop '
            'replaces only a plain TestLoop (run each split on its own, '
            'e.g. with --vocabulary)')
    loop = dict(type='InMaPTestLoop')
    loop.update(test_cfg)
    loop.update(copy.deepcopy(dict(options)))
    cfg.test_cfg = loop
    cfg.inmap = dict(options)
    return cfg

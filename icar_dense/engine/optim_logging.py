# Copyright (c) icar_dense contributors. All rights reserved.
"""One log line for the frozen parameters an optimizer skips.

mmengine's ``DefaultOptimWrapperConstructor`` logs one WARNING per parameter
with ``requires_grad=False`` (constructors that override ``add_params``, such
as mmaction2's Swin one, log nothing of the kind). Every config here freezes a
text tower -- RoBERTa-base alone is ~200 tensors -- so each run would open
with a wall of identical warnings that hid the ones that matter. While
:class:`SummarizedOptimWrapperConstructor` (named in the schedules of
``configs/_base_/schedules``) runs, those records are collected instead and
summarised in one INFO line per frozen module
(``text_classifier.text_encoder: 199 tensors, 124.6M parameters``). Every
other record passes through untouched.
"""
import logging
import re
from collections import OrderedDict
from typing import Dict, List

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

_SKIPPED = re.compile(
    r'^(?P<name>\S+) is skipped since its requires_grad=False$')
# module path components that end the summary key (the frozen unit)
_UNIT_ENDS = ('text_encoder', 'backbone')


def frozen_unit(name: str) -> str:
    """The module a frozen parameter is summarised under.

    ``a.text_classifier.text_encoder.model.layer.3.weight`` ->
    ``a.text_classifier.text_encoder``; other names lose their last two
    components (parameter name and the layer holding it) at most.
    """
    parts = name.split('.')
    for i, part in enumerate(parts):
        if part in _UNIT_ENDS:
            return '.'.join(parts[:i + 1])
    return '.'.join(parts[:max(1, len(parts) - 2)])


class _FrozenParamDigest(logging.Filter):
    """Collects the per-parameter "skipped" warnings of one constructor."""

    def __init__(self) -> None:
        super().__init__()
        self.names: List[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        match = _SKIPPED.match(str(record.getMessage()))
        if match is None:
            return True
        self.names.append(match.group('name'))
        return False

    def summary(self, model) -> str:
        sizes: Dict[str, int] = dict(
            (name, param.numel()) for name, param in model.named_parameters())
        units: 'OrderedDict[str, List[str]]' = OrderedDict()
        for name in self.names:
            units.setdefault(frozen_unit(name), []).append(name)
        lines = []
        for unit, names in units.items():
            count = sum(sizes.get(n, 0) for n in names)
            lines.append(f'  {unit}: {len(names)} tensors, '
                         f'{count / 1e6:.1f}M parameters')
        return (f'Frozen parameters (requires_grad=False) left out of the '
                f'optimizer: {len(self.names)} tensors in '
                f'{len(units)} module(s)\n' + '\n'.join(lines))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SummarizedOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with one line for frozen tensors.

    Same arguments and parameter groups; only the per-parameter "skipped"
    warnings are summarised (see module).  Named in the configs'
    ``optim_wrapper=dict(constructor=...)``; ``DefaultOptimWrapperConstructor``
    itself is left as it is.
    """

    def __call__(self, model):
        logger = MMLogger.get_current_instance()
        digest = _FrozenParamDigest()
        logger.addFilter(digest)
        try:
            return super().__call__(model)
        finally:
            logger.removeFilter(digest)
            if digest.names:
                print_log(
                    digest.summary(model), logger='current',
                    level=logging.INFO)


__all__ = ['SummarizedOptimWrapperConstructor', 'frozen_unit']

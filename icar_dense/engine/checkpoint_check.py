"""No scoring of random weights: a checkpoint must fill the model.

``tools/test.py``, the demos and ``tools/zeroshot_cls.py`` load a checkpoint
into a freshly built model.  A checkpoint that fits the model only partly
(another architecture, a text tower of another width, a ``state_dict``
nested twice, a pre-training file given to a detector) used to load what
it could and leave the rest at its random initialisation -- and the run
went on to print metrics.  Here every such load is watched:

* :class:`CheckpointWatch`, created right before the load, remembers the
  version counter of every tensor of ``model.state_dict()`` (an in-place
  copy, which is how torch and mmengine load a tensor, bumps it) and the
  missing keys each load reports (a ``load_state_dict`` post hook on the
  model, called by torch's and mmengine's loaders alike).  A tensor the
  load did not write -- absent from the file, of another shape there, or
  left out by a model's own mapping of the file -- is *at its
  initialisation*.  Buffers the models rebuild themselves
  (:data:`REBUILT_TENSORS`) do not count.
* :meth:`CheckpointWatch.report` raises :class:`PartialCheckpointError`
  naming the file, the first tensors and their count, grouped by module,
  with what is known about the cause (a pre-training file, shapes that
  differ, a nested state dict, keys the model has no place for) and the
  fix; with ``allow_partial`` (``--allow-partial-checkpoint``, or the config
  key ``allow_partial_checkpoint = True``) it logs the same as a warning and
  the run goes on.  ``report_only`` (``tools/train.py``'s ``load_from``,
  where the rest of the model legitimately starts from its init) logs one
  line of what was loaded and what stays at its initialisation.  A load
  that fills *nothing* is an error in every mode.
* :class:`CheckpointCoverageHook` puts a watch on ``Runner.load_checkpoint``
  (``load_from``, ``--resume``) through mmengine's ``after_load_checkpoint``
  hook point, which is called with the file's content right before it is
  loaded into the model: the hook also maps an official iCAR file onto a
  model that does not read it itself (detectors; see
  :func:`icar_dense.checkpoint.fit_icar_checkpoint`).
  :func:`enable_checkpoint_check` adds it (``tools/test.py``: strict,
  ``tools/train.py``: report only).
* :func:`load_checked` is the same for the demos (one file into one model)
  and :func:`watch_initialisation` for modules that load their
  ``init_cfg`` file in ``init_weights`` (``tools/zeroshot_cls.py``).

Our own checkpoints (``SafeCheckpointHook``: mmengine's full
``model.state_dict()``) hold every tensor, the frozen text tower included,
so they always pass.
"""
import contextlib
import logging
import re
from collections import Counter
from typing import Callable, Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from icar_dense.checkpoint import (CheckpointError, find_icar_state_dict,
                                   fit_icar_checkpoint, load_checkpoint_file)

# tensors the models rebuild themselves (window index buffers; BN's batch
# counter): never "left at initialisation"
REBUILT_TENSORS = re.compile(
    r'(^|\.)(relative_position_index|num_batches_tracked)$')
SHOWN = 10  # tensors named in a message; the rest are counted
PARTIAL_FLAG = '--allow-partial-checkpoint'
PARTIAL_CFG_KEY = 'allow_partial_checkpoint'
HOOK_TYPE = 'CheckpointCoverageHook'


class PartialCheckpointError(CheckpointError):
    """A checkpoint left weights of the model at their initialisation."""


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / TTA wrappers (what mmengine loads into)."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def checkpoint_state(checkpoint) -> Dict:
    """The flat state dict mmengine loads from ``checkpoint``: its
    ``state_dict`` entry if any, else the dict itself, ``module.`` removed
    (``_load_checkpoint_to_model``'s default ``revise_keys``)."""
    if not isinstance(checkpoint, dict):
        return {}
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict):
        return {}
    return {(k[len('module.'):] if isinstance(k, str)
             and k.startswith('module.') else k): v
            for k, v in state.items()}


def _group(name: str) -> str:
    """The module a tensor is counted under: ``neck``, ``rpn_head``,
    ``backbone.norm0``, ``backbone.stages``..."""
    parts = name.split('.')
    depth = 2 if parts[0] == 'backbone' and len(parts) > 2 else 1
    return '.'.join(parts[:depth])


def _by_module(names: List[str]) -> Counter:
    return Counter(_group(n) for n in names)


def _counts(groups: Counter) -> str:
    return ', '.join(f'{g} {c}' for g, c in groups.items())


class CheckpointWatch:
    """Which tensors of ``model`` one checkpoint load leaves at init.

    Create it right before the load and call :meth:`report` after it (or
    give ``on_loaded``, called with the watch as soon as a load into the
    model has finished: what the hook uses).

    Args:
        model (nn.Module): The model (wrappers are looked through).
        source (str): The file, named in messages.
        checkpoint (dict, optional): The file's content, when the caller
            has it: an official iCAR file is mapped onto a model that does
            not read it itself (in place, see ``fit_icar_checkpoint``), and
            the file's tensor shapes explain mismatches.
        on_loaded (callable, optional): Called once with the watch after
            the first load into the model has finished.
    """

    def __init__(self,
                 model: torch.nn.Module,
                 source: str,
                 checkpoint: Optional[dict] = None,
                 on_loaded: Optional[Callable] = None) -> None:
        self.model = unwrap_model(model)
        self.source = source
        state = checkpoint_state(checkpoint)
        self.pretraining = find_icar_state_dict(state, '')[0] is not None
        if checkpoint is not None:
            fit_icar_checkpoint(self.model, checkpoint, source)
            state = checkpoint_state(checkpoint)
        self.file_shapes = {
            k: tuple(v.shape)
            for k, v in state.items() if isinstance(v, torch.Tensor)
        }
        self.nested = [k for k, v in state.items() if isinstance(v, dict)]
        self._versions = {
            name: tensor._version
            for name, tensor in self.model.state_dict(keep_vars=True).items()
        }
        self.reported_missing, self.written = set(), set()
        self.unexpected: List[str] = []
        self._on_loaded = on_loaded
        self._handle = self.model.register_load_state_dict_post_hook(
            self._record)

    # ------------------------------------------------------------------
    def _record(self, module, incompatible_keys) -> None:
        missing = set(incompatible_keys.missing_keys)
        self.reported_missing |= missing
        self.written |= set(self._versions) - missing
        self.unexpected = list(incompatible_keys.unexpected_keys)
        if self._on_loaded is not None:
            self.close()
            on_loaded, self._on_loaded = self._on_loaded, None
            on_loaded(self)

    def close(self) -> None:
        """Stop watching (the post hook is removed)."""
        self._handle.remove()

    def counted(self) -> List[str]:
        """The tensors a checkpoint must fill (not rebuilt buffers)."""
        return [n for n in self.model.state_dict(keep_vars=True)
                if not REBUILT_TENSORS.search(n)]

    def not_loaded(self) -> List[str]:
        """Tensors the load did not write, in the model's order."""
        current = self.model.state_dict(keep_vars=True)
        left = []
        for name in self.counted():
            untouched = self._versions.get(name) == current[name]._version
            reported = (name in self.reported_missing
                        and name not in self.written)
            if untouched or reported:
                left.append(name)
        return left

    # ------------------------------------------------------------------
    def _named(self, name: str) -> str:
        shape = self.file_shapes.get(name)
        if shape is None:
            return name
        own = tuple(self.model.state_dict(keep_vars=True)[name].shape)
        return f'{name} (file {shape}, model {own})' if shape != own else name

    def _causes(self, left: List[str], groups: Counter) -> List[str]:
        causes = []
        if self.pretraining:
            causes.append(
                f'{self.source} is an iCAR pre-training checkpoint: it holds '
                'the Swin and the text tower, not the '
                f'{", ".join(groups)} of this model. Fine-tune from it first '
                '(tools/train.py CONFIG: the config loads it through '
                'init_cfg / load_from) and test the trained checkpoint')
        other_shape = [
            n for n in left if n in self.file_shapes and self.file_shapes[n]
            != tuple(self.model.state_dict(keep_vars=True)[n].shape)
        ]
        if other_shape:
            causes.append(
                f'{len(other_shape)} of them have another shape in the file '
                '(another architecture or width than the config builds: '
                'check arch / embed_dims / the text encoder config)')
        if self.nested and not self.pretraining:
            causes.append(
                f'the state dict holds dicts under {self.nested[:3]}: a '
                'state_dict nested twice? Save its inner state dict')
        if self.unexpected:
            number = len(self.unexpected)
            causes.append(
                f'the file has {number} key{"s" if number > 1 else ""} this '
                f'model has no place for, e.g. {self.unexpected[:3]}')
        return [cause[0].upper() + cause[1:] for cause in causes]

    def describe(self, left: List[str], total: int) -> str:
        """What is left at initialisation, and why where it is known."""
        groups = _by_module(left)
        by_module = _counts(groups)
        shown = ', '.join(self._named(n) for n in left[:SHOWN])
        more = f' and {len(left) - SHOWN} more' if len(left) > SHOWN else ''
        causes = self._causes(left, groups)
        return (f'{self.source}: {len(left)} of the {total} tensors of '
                f'{type(self.model).__name__} are not in the checkpoint (or '
                'have another shape there) and would stay at their '
                f'initialisation [{by_module}]: {shown}{more}'
                f'{". " + ". ".join(causes) if causes else ""}')

    def report(self, allow_partial: bool = False,
               report_only: bool = False) -> List[str]:
        """Raise, warn or log about the tensors left at initialisation.

        Args:
            allow_partial (bool): Warn instead of raising.
            report_only (bool): One INFO line (loaded / at initialisation),
                for ``load_from`` in training.

        Returns:
            list[str]: The tensors left at initialisation.

        Raises:
            PartialCheckpointError: Tensors are left at initialisation and
                neither flag is set, or nothing at all was loaded.
        """
        self.close()
        counted = self.counted()
        left = self.not_loaded()
        name = type(self.model).__name__
        if not left:
            print_log(f'{self.source}: all {len(counted)} tensors of {name} '
                      'loaded', logger='current')
            return left
        message = self.describe(left, len(counted))
        if len(left) == len(counted):
            raise PartialCheckpointError(
                f'{message}. Nothing of the file fits this model: pass the '
                'checkpoint trained with this config')
        if report_only:
            print_log(
                f'{self.source}: loaded {len(counted) - len(left)} of '
                f'{len(counted)} tensors of {name}; at their initialisation '
                f'(trained from scratch): {len(left)} '
                f'[{_counts(_by_module(left))}]',
                logger='current')
        elif allow_partial:
            print_log(f'{message}. {PARTIAL_FLAG}: going on with them at '
                      'their initialisation', logger='current',
                      level=logging.WARNING)
        else:
            raise PartialCheckpointError(
                f'{message}. Results would score these random weights. Pass '
                f'the checkpoint trained with this config, or '
                f'{PARTIAL_FLAG} (config: {PARTIAL_CFG_KEY} = True) to run '
                'with them at their initialisation anyway')
        return left


@HOOKS.register_module()
class CheckpointCoverageHook(Hook):
    """Check every ``Runner.load_checkpoint`` (``load_from``, resume).

    At mmengine's ``after_load_checkpoint`` hook point (the file is read,
    not yet loaded) an official iCAR file is mapped onto a model that does
    not read it itself, and a :class:`CheckpointWatch` reports as soon as
    the load into the model has finished.

    Args:
        allow_partial (bool): Warn instead of failing when tensors stay at
            their initialisation (``tools/test.py
            --allow-partial-checkpoint``). Defaults to False.
        report_only (bool): Only log what was loaded and what stays at its
            initialisation (``tools/train.py``: ``load_from`` is a
            starting point; the rest of the model is trained). A load that
            fills nothing still fails. Defaults to False.
    """
    priority = 'VERY_HIGH'

    def __init__(self, allow_partial: bool = False,
                 report_only: bool = False) -> None:
        self.allow_partial = allow_partial
        self.report_only = report_only

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        source = runner.cfg.get('load_from') or 'the resumed checkpoint'
        CheckpointWatch(runner.model, str(source), checkpoint,
                        on_loaded=self._check)

    def _check(self, watch: CheckpointWatch) -> None:
        watch.report(self.allow_partial, self.report_only)


def enable_checkpoint_check(cfg, mode: str = 'test',
                            allow_partial: bool = False):
    """Add :class:`CheckpointCoverageHook` to ``cfg.custom_hooks``.

    Args:
        cfg (Config): The run's config; its ``allow_partial_checkpoint``
            key (top level) has the effect of the flag.
        mode (str): ``'test'`` (fail on a partial load) or ``'train'``
            (report what ``load_from`` loaded and what stays at init).
        allow_partial (bool): ``--allow-partial-checkpoint``.
    """
    if mode not in ('test', 'train'):
        raise ValueError(f"mode must be 'test' or 'train', got {mode!r}")
    allow = bool(allow_partial or cfg.get(PARTIAL_CFG_KEY, False))
    hooks = [
        h for h in (cfg.get('custom_hooks') or [])
        if h.get('type') not in (HOOK_TYPE, f'mmengine.{HOOK_TYPE}')
    ]
    hooks.append(
        dict(type=HOOK_TYPE, allow_partial=allow,
             report_only=mode == 'train'))
    cfg.custom_hooks = hooks
    return cfg


def load_checked(model: torch.nn.Module, path: str,
                 allow_partial: bool = False,
                 map_location: str = 'cpu') -> dict:
    """Load ``path`` into ``model`` (the demos) and check it filled it.

    The file is read by the safe loader, an official iCAR file is mapped
    for models that do not read it themselves, mmengine's
    ``load_state_dict`` loads it, and :meth:`CheckpointWatch.report` fails
    (or, with ``allow_partial``, warns) when tensors stay at their
    initialisation.

    Returns:
        dict: The checkpoint (after mapping).
    """
    from mmengine.runner import load_state_dict
    checkpoint = load_checkpoint_file(path, map_location)
    watch = CheckpointWatch(model, path, checkpoint)
    try:
        load_state_dict(watch.model, checkpoint_state(checkpoint),
                        strict=False, logger='current')
    finally:
        watch.close()
    watch.report(allow_partial)
    return checkpoint


@contextlib.contextmanager
def watch_initialisation(module: torch.nn.Module, source: str,
                         allow_partial: bool = False):
    """Check that ``module.init_weights()`` inside the block filled it
    from ``source`` (its ``Pretrained`` init_cfg file)."""
    watch = CheckpointWatch(module, source)
    try:
        yield watch
    finally:
        watch.close()
    watch.report(allow_partial)

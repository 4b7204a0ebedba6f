"""Check a config before anything expensive runs.

``tools/train.py`` and ``tools/test.py`` call :func:`check_config` right
after the config is resolved (before the work dir is locked or written,
before the model, the datasets or a checkpoint are loaded), then
:func:`build_components` on the runner, before ``Runner.train()`` /
``Runner.test()``.

:func:`check_config` resolves the ``type`` of every registered component the
runner builds -- hooks (``default_hooks.<name>``, ``custom_hooks.<i>``),
loops (``train_cfg``, ``val_cfg``, ``test_cfg``), the model and its
sub-modules, datasets (wrappers included) and their pipelines, samplers,
dataloaders, evaluators and metrics, the optimizer wrapper and optimizer,
parameter schedulers, visualizer, visualization backends, log processor --
and checks its arguments against the signature of the class.  Many
OpenMMLab classes take ``**kwargs``; they are followed through the MRO when
the class hands them to ``super().__init__`` (a class that ignores them
accepts nothing more; one that keeps them for something else -- e.g.
``CheckpointHook`` passes them to ``Runner.save_checkpoint``, which takes
none, ``EMAHook`` to its average model -- is resolved by
:data:`~icar_dense.engine.signatures.KWARGS_SINKS` or not checked; see
:mod:`icar_dense.engine.signatures`).  Every unknown argument is reported at
once, each with its key path, the class, a close match and the accepted
arguments::

    default_hooks.checkpoint.intervall: CheckpointHook takes no argument
    'intervall' (did you mean 'interval'?); it accepts: backend_args, ...

:func:`build_components` then builds the loops (and through them the
datasets, samplers, dataloaders and evaluators) and the optimizer wrapper
with the runner's own ``build_*`` methods, so a failure names the config
key it came from (an exception note) before the first iteration; the runner
reuses what was built.
"""
import difflib
import inspect
from typing import List

from mmengine.config import Config

from .signatures import accepted_arguments, resolve_type

# keys a dataloader dict may hold besides DataLoader's own arguments (popped
# by mmengine's Runner.build_dataloader)
DATALOADER_EXTRA = ('dataset', 'sampler', 'batch_sampler',
                    'num_batch_per_epoch', 'worker_init_fn',
                    'disable_subprocess_warning', 'collate_fn',
                    'persistent_workers')
# model keys built by other means than the MODELS registry (norm/act/conv
# layers through mmcv's build_* helpers, which pop extra keys; weight
# initialisers; train/test settings)
MODEL_SKIP_KEYS = ('init_cfg', 'train_cfg', 'test_cfg', 'plugins', 'dcn')


class ConfigCheckError(KeyError):
    """A config names an unknown component or argument.

    A ``KeyError`` (a config key is wrong) whose message is printed as is.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def _close(word, names, n=1):
    return difflib.get_close_matches(word, sorted(names), n=n, cutoff=0.6)


class _Checker:

    def __init__(self, cfg: Config, scope: str):
        self.cfg = cfg
        self.scope = scope
        self.problems: List[str] = []

    # -- one component -------------------------------------------------
    def component(self, path: str, cfg, registry, default_type=None,
                  injected=(), extra=(), unknown_type_ok=False):
        """Check ``cfg`` (a dict with ``type``); return the class or None."""
        if not isinstance(cfg, dict):
            return None
        type_ = cfg.get('type', default_type)
        if type_ is None:
            return None
        cls = resolve_type(registry, type_, self.scope)
        if cls is None:
            if not unknown_type_ok:
                from .build_errors import suggest_registered_names
                with registry.switch_scope_and_registry(self.scope) as reg:
                    names = suggest_registered_names(reg, str(type_))
                hint = (' (did you mean ' +
                        ' or '.join(repr(n) for n in names) + '?)'
                        if names else '')
                self.problems.append(
                    f'{path}.type: {type_!r} is not a registered '
                    f'{registry.name} type in scope {self.scope!r}{hint}')
            return None
        names, closed = accepted_arguments(cls, cfg, self.scope)
        if not closed:
            return cls
        accepted = (names | set(extra) | {'type', '_scope_'}) - set(injected)
        name = getattr(cls, '__name__', str(type_))
        for key in cfg:
            if key in accepted:
                continue
            close = _close(key, accepted - {'type', '_scope_'})
            hint = (' (did you mean ' + ' or '.join(repr(c) for c in close) +
                    '?)' if close else '')
            shown = sorted(accepted - {'type', '_scope_'})
            self.problems.append(
                f'{path}.{key}: {name} takes no argument {key!r}{hint}; it '
                f'accepts: {", ".join(shown) or "no arguments"}')
        return cls

    # -- groups ----------------------------------------------------------
    def hooks(self):
        from mmengine.registry import HOOKS
        default_hooks = self.cfg.get('default_hooks') or {}
        for name, hook in default_hooks.items():
            self.component(f'default_hooks.{name}', hook, HOOKS)
        for i, hook in enumerate(self.cfg.get('custom_hooks') or []):
            self.component(f'custom_hooks.{i}', hook, HOOKS)

    def loop(self, key, default_type):
        from mmengine.registry import LOOPS
        loop = self.cfg.get(key)
        if not isinstance(loop, dict):
            return
        loop = dict(loop)
        if key == 'train_cfg' and 'type' not in loop:
            if 'by_epoch' not in loop:
                return  # mmengine raises its own error
            loop['type'] = ('EpochBasedTrainLoop'
                            if loop.pop('by_epoch') else 'IterBasedTrainLoop')
        self.component(key, loop, LOOPS, default_type=default_type,
                       injected=('runner', 'dataloader', 'evaluator'))

    def dataloader(self, key):
        from mmengine.registry import DATA_SAMPLERS
        from torch.utils.data import DataLoader
        loader = self.cfg.get(key)
        if not isinstance(loader, dict):
            return
        accepted = set(inspect.signature(DataLoader.__init__).parameters)
        accepted |= set(DATALOADER_EXTRA)
        accepted.discard('self')
        for name in loader:
            if name not in accepted:
                close = _close(name, accepted)
                hint = (' (did you mean ' + ' or '.join(
                    repr(c) for c in close) + '?)' if close else '')
                self.problems.append(
                    f'{key}.{name}: a dataloader takes no argument '
                    f'{name!r}{hint}; it accepts: '
                    f'{", ".join(sorted(accepted))}')
        self.component(f'{key}.sampler', loader.get('sampler'),
                       DATA_SAMPLERS, injected=('dataset', 'seed'))
        self.component(f'{key}.batch_sampler', loader.get('batch_sampler'),
                       DATA_SAMPLERS, injected=('sampler', 'batch_size'))
        self.dataset(f'{key}.dataset', loader.get('dataset'))

    def dataset(self, path, cfg):
        from mmengine.registry import DATASETS
        if not isinstance(cfg, dict):
            return
        self.component(path, cfg, DATASETS)
        inner = cfg.get('dataset')
        if isinstance(inner, dict):
            self.dataset(f'{path}.dataset', inner)
        datasets = cfg.get('datasets')
        if isinstance(datasets, (list, tuple)):
            for i, item in enumerate(datasets):
                self.dataset(f'{path}.datasets.{i}', item)
        pipeline = cfg.get('pipeline')
        if isinstance(pipeline, (list, tuple)):
            self.transforms(f'{path}.pipeline', pipeline)

    def transforms(self, path, pipeline):
        from mmengine.registry import TRANSFORMS
        for i, transform in enumerate(pipeline):
            if isinstance(transform, (list, tuple)):  # TestTimeAug
                self.transforms(f'{path}.{i}', transform)
                continue
            if not isinstance(transform, dict):
                continue
            self.component(f'{path}.{i}', transform, TRANSFORMS)
            inner = transform.get('transforms')
            if isinstance(inner, (list, tuple)):
                self.transforms(f'{path}.{i}.transforms', inner)

    def evaluator(self, key):
        from mmengine.registry import EVALUATOR, METRICS
        evaluator = self.cfg.get(key)
        if isinstance(evaluator, dict) and 'metrics' in evaluator:
            self.component(key, evaluator, EVALUATOR,
                           default_type='Evaluator')
            metrics, base = evaluator['metrics'], f'{key}.metrics'
        else:
            metrics, base = evaluator, key
        if isinstance(metrics, dict):
            self.component(base, metrics, METRICS)
        elif isinstance(metrics, (list, tuple)):
            for i, metric in enumerate(metrics):
                self.component(f'{base}.{i}', metric, METRICS)

    def optim(self):
        from mmengine.registry import (OPTIM_WRAPPERS, OPTIMIZERS,
                                       PARAM_SCHEDULERS)
        wrapper = self.cfg.get('optim_wrapper')
        if isinstance(wrapper, dict) and _default_constructor(wrapper) and \
                isinstance(wrapper.get('optimizer'), dict):
            self.component('optim_wrapper', wrapper, OPTIM_WRAPPERS,
                           default_type='OptimWrapper',
                           extra=('paramwise_cfg', 'constructor'))
            self.component('optim_wrapper.optimizer', wrapper['optimizer'],
                           OPTIMIZERS, injected=('params', ))
        schedulers = self.cfg.get('param_scheduler')
        if isinstance(schedulers, dict) and 'type' in schedulers:
            schedulers = [schedulers]
        if isinstance(schedulers, (list, tuple)):
            for i, scheduler in enumerate(schedulers):
                self.component(f'param_scheduler.{i}', scheduler,
                               PARAM_SCHEDULERS, injected=('optimizer', ),
                               extra=('convert_to_iter_based', ))

    def runtime(self):
        from mmengine.registry import (LOG_PROCESSORS, VISBACKENDS,
                                       VISUALIZERS)
        visualizer = self.cfg.get('visualizer')
        if isinstance(visualizer, dict):
            self.component('visualizer', visualizer, VISUALIZERS,
                           default_type='Visualizer')
            for i, backend in enumerate(visualizer.get('vis_backends')
                                        or []):
                self.component(f'visualizer.vis_backends.{i}', backend,
                               VISBACKENDS)
        self.component('log_processor', self.cfg.get('log_processor'),
                       LOG_PROCESSORS, default_type='LogProcessor')

    def model(self, path, cfg, top=True):
        from mmengine.registry import MODELS
        if not isinstance(cfg, dict):
            return
        # an unknown model type is left to the registry's own error (with
        # its suggestion), raised when the runner builds the model
        cls = self.component(path, cfg, MODELS, unknown_type_ok=True,
                             extra=('data_preprocessor', ) if top else ())
        if cls is None:
            return
        for key, value in cfg.items():
            if key in MODEL_SKIP_KEYS or key.endswith('_cfg') or \
                    key == 'type':
                continue
            items = (enumerate(value) if isinstance(value, (list, tuple))
                     else [(None, value)])
            for i, item in items:
                if isinstance(item, dict) and 'type' in item:
                    sub = f'{path}.{key}' if i is None else \
                        f'{path}.{key}.{i}'
                    self.model(sub, item, top=False)


def _default_constructor(wrapper) -> bool:
    """Whether ``wrapper`` is built by mmengine's default constructor (or
    a subclass such as ``SummarizedOptimWrapperConstructor``): then its
    ``type`` and ``optimizer`` are built as written."""
    from mmengine.optim import DefaultOptimWrapperConstructor
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
    name = wrapper.get('constructor')
    if name is None:
        return True
    cls = OPTIM_WRAPPER_CONSTRUCTORS.get(name) if isinstance(name, str) \
        else name
    return isinstance(cls, type) and issubclass(
        cls, DefaultOptimWrapperConstructor)


def check_config(cfg: Config, mode: str = 'train') -> None:
    """Check every registered component of ``cfg`` for ``mode``.

    Args:
        cfg (Config): A resolved config (after ``--cfg-options``).
        mode (str): ``'train'`` (training, validation and, by signature
            only, testing components) or ``'test'``.

    Raises:
        ConfigCheckError: Listing each unknown type or argument with its
            key path, a close match and the accepted arguments.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    # mmengine's root registries fill when these modules are imported
    import mmengine.dataset  # noqa: F401
    import mmengine.evaluator  # noqa: F401
    import mmengine.hooks  # noqa: F401
    import mmengine.model  # noqa: F401
    import mmengine.optim  # noqa: F401
    import mmengine.runner  # noqa: F401
    import mmengine.visualization  # noqa: F401
    scope = cfg.get('default_scope')
    checker = _Checker(cfg, scope)
    checker.hooks()
    checker.runtime()
    checker.model('model', cfg.get('model'))
    if mode == 'train':
        checker.loop('train_cfg', None)
        checker.dataloader('train_dataloader')
        checker.optim()
    for split, default in (('val', 'ValLoop'), ('test', 'TestLoop')):
        if mode == 'test' and split == 'val':
            continue
        if cfg.get(f'{split}_cfg') is None:
            continue
        checker.loop(f'{split}_cfg', default)
        checker.dataloader(f'{split}_dataloader')
        checker.evaluator(f'{split}_evaluator')
    if checker.problems:
        raise ConfigCheckError(
            f'config {cfg.filename}: {len(checker.problems)} unknown '
            'component(s) or argument(s), found before anything was built '
            'or written:\n  ' + '\n  '.join(checker.problems))


def build_components(runner, mode: str = 'train') -> None:
    """Build the loops, datasets, evaluators and optimizer wrapper now.

    Uses the runner's own ``build_*`` (through its ``train_loop`` /
    ``val_loop`` / ``test_loop`` properties); ``Runner.train()`` /
    ``Runner.test()`` reuse the built objects.  An exception gets a note
    naming the config key it came from.
    """
    from mmengine.runner import Runner
    if not isinstance(runner, Runner):
        return  # e.g. FlexibleRunner: builds through its strategy

    def build(key, make):
        try:
            return make()
        except Exception as err:  # noqa: BLE001
            err.add_note(f'(while building {key} of {runner.cfg.filename} '
                         'before the first iteration)')
            raise

    if mode == 'train':
        build('train_cfg / train_dataloader', lambda: runner.train_loop)
        runner.optim_wrapper = build(
            'optim_wrapper',
            lambda: runner.build_optim_wrapper(runner.optim_wrapper))
        build('val_cfg / val_dataloader / val_evaluator',
              lambda: runner.val_loop)
    else:
        build('test_cfg / test_dataloader / test_evaluator',
              lambda: runner.test_loop)


def problems_of(cfg: Config, mode: str = 'train') -> List[str]:
    """The problems :func:`check_config` would raise for, as a list."""
    try:
        check_config(cfg, mode)
    except ConfigCheckError as err:
        return str(err).split('\n  ')[1:]
    return []


__all__ = ['ConfigCheckError', 'accepted_arguments', 'build_components',
           'check_config', 'problems_of']

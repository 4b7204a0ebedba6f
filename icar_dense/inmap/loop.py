"""InMaP at test time: a generic mmengine test loop.

:class:`InMaPTestLoop` (registered in mmengine's root ``LOOPS``, so configs
of the mmdet, mmseg and mmaction2 scopes all find it) evaluates a model
twice: once with the text class embeddings, as ``TestLoop`` does, and once
with *vision proxies* learned by InMaP from the features of the whole
unlabeled test set. Both results are returned, logged and written to
``metrics_test.json`` side by side: ``acc/top1`` and ``inmap/acc/top1``,
``mIoU`` and ``inmap/mIoU``, ``coco/bbox_mAP`` and ``inmap/coco/bbox_mAP``.

Enable it from a config (``tools/test.py`` calls
:func:`~icar_dense.inmap.config.enable_inmap`)::

    inmap = dict(iters=2000, pixels_per_image=256)   # any option below

The loop (1) runs the test set with the text proxies (all hooks) while
the *feature collector* of the task (:mod:`~icar_dense.inmap.collectors`,
by ``task`` or the config's ``default_scope``) pools the visual embeddings
every text classifier compares with its class embeddings: clips, pixels or
regions; (2) gathers them on rank 0 in dataset order (1 and N processes
learn from identical features), learns the proxies there
(:class:`~icar_dense.inmap.learner.ProxyLearner`) and broadcasts them;
(3) sets them on the classifiers (``set_class_proxies``), runs the test set
again without iteration hooks and reports ``<prefix>/<metric>`` (variant
``'full'``) or ``<prefix>_no_sinkhorn/<metric>``; the text embeddings are
restored afterwards. It knows no task: a new one registers a collector.

Cost: the test set is run twice (plus the learning, seconds to a minute on
a GPU); memory on rank 0 is the pooled embeddings (n x 256 floats, e.g.
2000 images x 256 pixels = 0.5 GB in float32, ``feature_dtype='float16'``
halves it; ``max_features`` caps n).
"""
import contextlib
import math
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence, Union

import torch
from mmengine.evaluator import DumpResults, Evaluator
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS, DefaultScope
from mmengine.runner import TestLoop
from mmengine.runner.amp import autocast
from mmengine.structures import BaseDataElement

from .checks import check_choice
from .collectors import (INMAP_COLLECTORS, CollectorHook, collector_options,
                         find_text_classifiers)
from .io import (ClassifierProxies, load_classifier_proxies,
                 save_classifier_proxies)
from .learner import ProxyLearner, run_on_rank0

__all__ = ['InMaPTestLoop']

_DEFAULT_PROXY_FILE = 'inmap_proxies.pth'


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _drop_loss(outputs: list) -> list:
    """The predictions without the loss element a model may append (what
    ``TestLoop.run_iter`` splits off, privately, in mmengine 0.10)."""
    if outputs and isinstance(outputs[-1], BaseDataElement) and \
            outputs[-1].keys() == ['loss']:
        return outputs[:-1]
    return outputs


@LOOPS.register_module()
class InMaPTestLoop(TestLoop):
    """Test with the text proxies, then with InMaP vision proxies.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): Test dataloader (or its config).
        evaluator (Evaluator | dict | list): Test evaluator (or config).
        fp16 (bool): Autocast the test steps. Defaults to False.
        task (str, optional): A registered collector (``'clip'``,
            ``'pixel'``, ``'region'``); None picks the one whose
            ``default_scope`` is the config's (mmaction, mmseg, mmdet).
        classifiers (Sequence[str], optional): Module names (e.g.
            ``'decode_head.text_classifier'``) of the text classifiers to
            refine; None takes every text classifier of the model.
        feature_dtype (str): Storage dtype of the pooled embeddings,
            ``'float32'`` or ``'float16'``/``'bfloat16'`` (learning upcasts).
        collect_device (str): ``collect_results`` mode, ``'cpu'`` (through
            files in ``<work_dir>/.inmap_gather``, removed after: the work
            dir must be shared by the ranks) or ``'gpu'``.
        seed (int): Seed of the pixel sampling and of ``max_features``.
        save_proxies (str | bool): Save the learned proxies (rank 0) to this
            file; True: ``<work_dir>/inmap_proxies.pth``.
        load_proxies (str, optional): Use the proxies of this file (written
            by ``save_proxies``, same vocabulary) instead of learning.
        text_pass (bool): With ``load_proxies``, False skips the text pass
            (inductive use: only the InMaP metrics). Default True.
        prefix (str): Metric name prefix. Default ``'inmap'``.
        **options: The learning options of
            :class:`~icar_dense.inmap.learner.ProxyLearner` (``tau_t``,
            ``tau_i``, ``alpha``, ``gamma``, ``col_marginal``,
            ``sinkhorn_iters``, ``iters``, ``lr``, ``chunk_size``,
            ``variants``, ``fix_background``, ``max_features``, ``device``,
            ``progress``) and those of every registered collector
            (``pixels_per_image``, ``pixel_sampling``, ``score_thr``,
            ``nms_iou``, ``max_per_image``, ``average_views``; all checked,
            the task's are used).

    Raises:
        TypeError, ValueError, KeyError, FileNotFoundError: A bad option,
            before the dataloader and evaluator are built.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 fp16: bool = False,
                 task: Optional[str] = None,
                 classifiers: Optional[Sequence[str]] = None,
                 feature_dtype: str = 'float32',
                 collect_device: str = 'cpu',
                 seed: int = 0,
                 save_proxies: Union[str, bool, None] = None,
                 load_proxies: Optional[str] = None,
                 text_pass: bool = True,
                 prefix: str = 'inmap',
                 **options) -> None:
        name = type(self).__name__
        if task is None:
            task = self._task_from_scope(runner)
        tasks = list(INMAP_COLLECTORS.module_dict)
        if task not in tasks:
            raise ValueError(f'{name}: task must be one of {tasks}, '
                             f'got {task!r}')
        collect = collector_options()
        collect.update(
            (k, options.pop(k)) for k in list(options) if k in collect)
        try:
            # the learning options; an unknown one is a TypeError here
            self.learner = ProxyLearner(seed=seed, **options)
            for collector_cls in INMAP_COLLECTORS.module_dict.values():
                collector_cls.check_options(collect)
            check_choice('feature_dtype', feature_dtype,
                         ('float32', 'float16', 'bfloat16', 'float64'))
            check_choice('collect_device', collect_device, ('cpu', 'gpu'))
        except (TypeError, ValueError) as err:
            raise type(err)(f'{name}: {err}') from None
        if load_proxies is not None and not osp.isfile(load_proxies):
            raise FileNotFoundError(
                f'{name}: load_proxies file {load_proxies!r} not found')
        if not text_pass and load_proxies is None:
            raise ValueError(f'{name}: text_pass=False needs load_proxies '
                             '(the features come from the text pass)')
        self.task = task
        self.collector_cls = INMAP_COLLECTORS.get(task)
        self.collector_options = collect
        self.variants = self.learner.variants
        self.classifier_names = (None if classifiers is None else
                                 [str(c) for c in classifiers])
        self.feature_dtype = feature_dtype
        self.collect_device = collect_device
        self.seed = int(seed)
        if save_proxies is True:
            save_proxies = osp.join(runner.work_dir, _DEFAULT_PROXY_FILE)
        self.save_path = save_proxies or None
        self.load_path = load_proxies
        self.text_pass = text_pass
        self.prefix = prefix
        #: name -> variant -> (C(+1), D) proxies of the last run (CPU)
        self.proxies: ClassifierProxies = {}
        #: name -> statistics of the last learning (number of features...)
        self.summary: Dict[str, Dict[str, Any]] = {}
        #: the collector of the text pass in progress (None otherwise)
        self.collector = None
        super().__init__(runner, dataloader, evaluator, fp16)
        runner.register_hook(CollectorHook(self))

    @staticmethod
    def _task_from_scope(runner) -> str:
        cfg = getattr(runner, 'cfg', None)
        scope = cfg.get('default_scope') if cfg is not None else None
        if scope is None:
            current = DefaultScope.get_current_instance()
            scope = current.scope_name if current is not None else None
        for task, cls in INMAP_COLLECTORS.module_dict.items():
            if cls.default_scope is not None and scope == cls.default_scope:
                return task
        raise ValueError(
            f'InMaPTestLoop: cannot tell the task from default_scope '
            f'{scope!r}; set inmap=dict(task=...) to one of '
            f'{list(INMAP_COLLECTORS.module_dict)}')

    def _classifiers(self) -> Dict[str, torch.nn.Module]:
        found = find_text_classifiers(_unwrap(self.runner.model))
        if not found:
            raise TypeError(
                f'InMaPTestLoop: the model '
                f'{type(_unwrap(self.runner.model)).__name__} has no '
                'TextClassifier: InMaP refines the class embeddings of a '
                'text classifier')
        if self.classifier_names is not None:
            unknown = [n for n in self.classifier_names if n not in found]
            if unknown:
                raise KeyError(f'InMaPTestLoop: classifiers {unknown} are '
                               f'not TextClassifier modules of the model; '
                               f'it has {list(found)}')
            found = OrderedDict((n, found[n]) for n in self.classifier_names)
        return found

    def _model_device(self) -> torch.device:
        if self.learner.device != 'auto':
            return torch.device(self.learner.device)
        param = next(_unwrap(self.runner.model).parameters(), None)
        return param.device if param is not None else torch.device('cpu')

    def _metric_prefix(self, variant: str) -> str:
        return self.prefix if variant == 'full' else \
            f'{self.prefix}_{variant}'

    # ------------------------------------------------------------------
    def run(self) -> dict:
        runner = self.runner
        runner.call_hook('before_test')
        runner.call_hook('before_test_epoch')
        runner.model.eval()
        classifiers = self._classifiers()
        metrics = OrderedDict()
        try:
            proxies = (
                self._load(classifiers)
                if self.load_path is not None else None)
            if self.text_pass:
                metrics.update(self._text_pass(classifiers, proxies is None))
            if proxies is None:
                proxies = self._learn(classifiers)
                self.collector = None  # frees the pooled features
            self.proxies = proxies
            for variant in self.variants:
                scored = self._rescore(classifiers, proxies, variant)
                prefix = self._metric_prefix(variant)
                metrics.update((f'{prefix}/{key}', value)
                               for key, value in scored.items())
        finally:
            if self.collector is not None:
                self.collector.remove()
                self.collector = None
            for module in classifiers.values():
                module.set_class_proxies(None)
        self._log_metrics(metrics)
        runner.call_hook('after_test_epoch', metrics=metrics)
        runner.call_hook('after_test')
        return metrics

    def _text_pass(self, classifiers, collect: bool) -> dict:
        """``TestLoop.run``'s pass, the collector attached if ``collect``."""
        model = _unwrap(self.runner.model)
        collector = None
        if collect:
            collector = self.collector_cls(
                classifiers,
                feature_dtype=self.feature_dtype,
                seed=self.seed,
                **{
                    k: self.collector_options[k]
                    for k in self.collector_cls.options
                })
            collector.attach(model)
            self.collector = collector
        try:
            with collector.text_pass(model) if collector is not None \
                    else contextlib.nullcontext():
                self.test_loss.clear()
                for idx, data_batch in enumerate(self.dataloader):
                    self.run_iter(idx, data_batch)
        finally:
            if collector is not None:
                collector.remove()
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        # the losses TestLoop.run adds (mmengine's _parse_losses is private)
        losses = {k: v.mean() for k, v in self.test_loss.items()}
        if losses:
            losses['test_loss'] = sum(v for k, v in losses.items()
                                      if 'loss' in k)
            metrics.update(losses)
        return metrics

    # ------------------------------------------------------------------
    def _learn(self, classifiers) -> ClassifierProxies:
        """Gather the embeddings on rank 0, learn there, broadcast."""
        # every rank computes the text proxies (a collective when the
        # vocabulary encoding is sharded; cached after the text pass)
        text = OrderedDict((name, module.all_class_embeddings().detach())
                           for name, module in classifiers.items())
        items = self.collector.items if self.collector is not None else []

        def learn(pooled):
            proxies, summary = self.learner.learn(
                classifiers,
                text,
                pooled,
                device=self._model_device(),
                task=self.task,
                imbalanced=self.collector_cls.imbalanced,
                hint=self.collector_cls.empty_hint(self.collector_options))
            if self.save_path:
                self._save(classifiers, proxies, summary)
            return proxies, summary

        proxies, self.summary = run_on_rank0(
            learn,
            items,
            len(self.dataloader.dataset),
            collect_device=self.collect_device,
            tmpdir=osp.join(self.runner.work_dir, '.inmap_gather'))
        return proxies

    def _save(self, classifiers, proxies, summary) -> None:
        cfg = getattr(self.runner, 'cfg', None)
        save_classifier_proxies(
            self.save_path,
            proxies,
            classifiers,
            task=self.task,
            checkpoint=cfg.get('load_from') if cfg is not None else None,
            options=dict(
                self.learner.options(),
                **self.collector_options,
                seed=self.seed),
            summary=summary)
        print_log(
            f'InMaPTestLoop: saved the proxies to {self.save_path}',
            logger='current')

    def _load(self, classifiers) -> ClassifierProxies:
        try:
            proxies = load_classifier_proxies(self.load_path, classifiers,
                                              self.variants)
        except (KeyError, ValueError) as err:
            raise type(err)(f'InMaPTestLoop: {err.args[0]}') from None
        print_log(
            f'InMaPTestLoop: loaded the proxies of {self.load_path}',
            logger='current')
        return proxies

    # ------------------------------------------------------------------
    @torch.no_grad()
    def _rescore(self, classifiers, proxies, variant: str) -> dict:
        for name, module in classifiers.items():
            module.set_class_proxies(proxies[name][variant] if name in
                                     proxies else None)
        metrics = [
            m for m in self.evaluator.metrics
            if not isinstance(m, DumpResults)
        ]
        evaluator = Evaluator(metrics)
        evaluator.dataset_meta = self.evaluator.dataset_meta
        total = len(self.dataloader)
        step = max(1, total // 10)
        print_log(
            f'InMaPTestLoop: testing with the {variant!r} proxies',
            logger='current')
        for idx, data_batch in enumerate(self.dataloader):
            with autocast(enabled=self.fp16):
                outputs = self.runner.model.test_step(data_batch)
            evaluator.process(
                data_samples=_drop_loss(outputs), data_batch=data_batch)
            if (idx + 1) % step == 0 or idx + 1 == total:
                print_log(
                    f'InMaPTestLoop: {variant}: {idx + 1}/{total}',
                    logger='current')
        return evaluator.evaluate(len(self.dataloader.dataset)) \
            if metrics else {}

    def _log_metrics(self, metrics: dict) -> None:
        pairs = []
        for key, value in metrics.items():
            if key.startswith(self.prefix):
                continue
            row = [f'{key}: {_fmt(value)}']
            for variant in self.variants:
                other = metrics.get(f'{self._metric_prefix(variant)}/{key}')
                if other is not None:
                    row.append(f'{variant} {_fmt(other)}')
            pairs.append(' -> '.join(row))
        if pairs:
            print_log(
                'InMaPTestLoop: text -> InMaP\n' + '\n'.join(pairs),
                logger='current')


def _fmt(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f'{value:.4f}'
    return str(value)

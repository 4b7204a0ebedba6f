"""Learning the proxies of a model's text classifiers from pooled features.

:class:`ProxyLearner` holds the learning options of
:class:`~icar_dense.inmap.loop.InMaPTestLoop` (checked once, when the loop
is built, with :func:`~icar_dense.inmap.checks.check_learning_options`) and
turns the embeddings pooled for each classifier into its vision proxies
with :func:`~icar_dense.inmap.core.learn_vision_proxies`: the sampling cap,
the Sinkhorn column marginal, the fixed background proxy of a softmax
detector and a summary of what was learned. It runs where the pooled
features are: :func:`run_on_rank0` gathers them there, in dataset order,
and hands the result (or the error) to every rank.
"""
import logging
import traceback
from collections import OrderedDict
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import torch
from mmengine.dist import (broadcast_object_list, collect_results,
                           get_dist_info)
from mmengine.logging import print_log

from .checks import (LEARNED_VARIANTS, check_choice, check_learning_options,
                     check_optional_int)
from .core import learn_vision_proxies, predict_with_proxies
from .io import ClassifierProxies

__all__ = ['ProxyLearner', 'PROGRESS_MIN_ITERS', 'run_on_rank0']

#: ``progress='auto'``: a progress bar for runs of at least this many steps
PROGRESS_MIN_ITERS = 200


class ProxyLearner:
    """The learning half of the InMaP test loop.

    Args:
        tau_t, tau_i, alpha, gamma, sinkhorn_iters, iters, lr, chunk_size:
            Hyper-parameters of ``learn_vision_proxies`` (defaults of the
            paper: 0.01, 0.04, 0.6, 0, 20, 2000, 10, auto).
        col_marginal (str | Sequence[float] | None): Sinkhorn column
            marginal: None (uniform, or ``predicted mass ** gamma`` with
            ``gamma > 0``), ``'predicted'`` (Laplace-smoothed histogram of
            the text predictions of the pooled features), a list with one
            non-negative weight per column (background last for a softmax
            detector), or ``'auto'`` (default): ``'predicted'`` for
            imbalanced pools (pixels, regions) when ``gamma == 0``, else
            None.
        variants (str | Sequence[str]): Learned proxies, ``'full'``
            (Sinkhorn pseudo-labels) and/or ``'no_sinkhorn'``.
        fix_background (bool): Keep the background proxy of a softmax
            detector fixed. Default True.
        max_features (int, optional): Learn from at most this many pooled
            features per classifier (a seeded random subset).
        device (str): Where to learn: ``'auto'`` (the model's device),
            ``'cpu'``, ``'cuda'``...
        progress (bool | str): Progress bar of the learning steps (stderr).
            ``'auto'``: on for runs of at least :data:`PROGRESS_MIN_ITERS`
            steps.
        seed (int): Seed of the ``max_features`` subset.

    Raises:
        TypeError, ValueError: A bad option (the message names it).
    """

    def __init__(self,
                 tau_t: float = 0.01,
                 tau_i: float = 0.04,
                 alpha: float = 0.6,
                 gamma: float = 0.0,
                 col_marginal: Union[str, Sequence[float], None] = 'auto',
                 sinkhorn_iters: int = 20,
                 iters: int = 2000,
                 lr: float = 10.0,
                 chunk_size: Optional[int] = None,
                 variants: Union[str, Sequence[str]] = ('full', ),
                 fix_background: bool = True,
                 max_features: Optional[int] = None,
                 device: str = 'auto',
                 progress: Union[bool, str] = 'auto',
                 seed: int = 0) -> None:
        if isinstance(col_marginal, str):
            if col_marginal not in ('auto', 'predicted'):
                raise ValueError("col_marginal must be 'auto', 'predicted', "
                                 'None or a list of weights, got '
                                 f'{col_marginal!r}')
            if col_marginal == 'predicted' and gamma > 0:
                raise ValueError("col_marginal='predicted' and gamma > 0 "
                                 'both set the marginal; use one')
        elif col_marginal is not None:
            col_marginal = [float(v) for v in col_marginal]
        self.hparams = dict(
            tau_t=tau_t,
            tau_i=tau_i,
            alpha=alpha,
            gamma=gamma,
            sinkhorn_iters=sinkhorn_iters,
            iters=iters,
            lr=lr,
            chunk_size=chunk_size)
        self.variants = check_learning_options(
            col_marginal=None
            if isinstance(col_marginal, str) else col_marginal,
            variants=variants,
            **self.hparams)
        if 'text' in self.variants:
            raise ValueError(f'variants are the learned proxies '
                             f'{LEARNED_VARIANTS}; the text metrics are '
                             'always reported (without prefix)')
        check_optional_int('max_features', max_features, 1)
        check_choice('progress', progress, (True, False, 'auto'))
        self.col_marginal = col_marginal
        self.fix_background = fix_background
        self.max_features = max_features
        self.device = device
        self.progress = progress
        self.seed = int(seed)

    @property
    def show_progress(self) -> bool:
        """Whether the learning steps show a progress bar."""
        if self.progress == 'auto':
            return int(self.hparams['iters']) >= PROGRESS_MIN_ITERS
        return bool(self.progress)

    def options(self) -> Dict[str, Any]:
        """The options, as saved with the proxies."""
        return dict(
            self.hparams,
            col_marginal=self.col_marginal,
            fix_background=self.fix_background)

    def learn(self,
              classifiers: Mapping[str, torch.nn.Module],
              text: Mapping[str, torch.Tensor],
              pooled: Sequence[Dict[str, torch.Tensor]],
              *,
              device: torch.device,
              task: str,
              imbalanced: bool,
              hint: str = '') -> Tuple[ClassifierProxies, Dict[str, dict]]:
        """Learn the proxies of every classifier that gave features.

        Args:
            classifiers (Mapping[str, Module]): Text classifiers by name.
            text (Mapping[str, Tensor]): Their ``(C(+1), D)`` text class
                embeddings.
            pooled (Sequence[dict]): One item per test sample: classifier
                name -> its ``(k, D)`` embeddings.
            device (torch.device): Where to learn.
            task (str): Name of the features (for the log).
            imbalanced (bool): ``col_marginal='auto'`` means
                ``'predicted'``.
            hint (str): What to check when a classifier gave no features.

        Returns:
            tuple: name -> variant -> ``(C(+1), D)`` proxies (CPU) and
            name -> summary (number of features, marginal, changed
            predictions...).

        Raises:
            RuntimeError: No classifier gave features.
        """
        proxies, summary = OrderedDict(), OrderedDict()
        for name, module in classifiers.items():
            parts = [it[name] for it in pooled if name in it]
            feats = torch.cat(parts) if parts else None
            if feats is None or feats.shape[0] == 0:
                print_log(
                    f'InMaPTestLoop: {name} gave no features (task '
                    f'{task!r}{hint}): it keeps its text proxies',
                    logger='current',
                    level=logging.WARNING)
                continue
            proxies[name], summary[name] = self._learn_one(
                name, module, feats, text[name], device, imbalanced)
            print_log(
                f'InMaPTestLoop: {name}: learned {list(self.variants)} '
                f'proxies of {summary[name]["classes"]} classes from '
                f'{summary[name]["num_features"]} {task} features in '
                f'{summary[name]["seconds"]:.1f}s; pooled predictions '
                'changed: ' + ', '.join(
                    f'{v} {c:.1%}'
                    for v, c in summary[name]['changed_predictions'].items()),
                logger='current')
        if not proxies:
            raise RuntimeError(
                'InMaPTestLoop: no text classifier gave features '
                f'(task {task!r}); nothing to learn. Classifiers: '
                f'{list(classifiers)}')
        return proxies, summary

    def _learn_one(self, name, module, feats, text, device, imbalanced):
        num_pooled = feats.shape[0]
        if self.max_features is not None and num_pooled > self.max_features:
            generator = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(
                num_pooled, generator=generator)[:self.max_features]
            feats = feats[keep.sort().values]
        feats = feats.to(device)
        text_proxies = text.t().to(device, torch.float32)
        if feats.dtype == torch.float64:
            text_proxies = text_proxies.double()
        num_cols = text_proxies.shape[1]
        fixed = None
        has_bg = module.bg_embed is not None
        if has_bg and self.fix_background:
            fixed = torch.zeros(num_cols, dtype=torch.bool)
            fixed[-1] = True
        marginal, gamma, marginal_kind = self._marginal(
            name, module, feats, text_proxies, imbalanced)
        result = learn_vision_proxies(
            feats,
            text_proxies,
            col_marginal=marginal,
            fixed_proxies=fixed,
            variants=('text', ) + self.variants,
            progress=self.show_progress,
            **dict(self.hparams, gamma=gamma))
        learned = OrderedDict(
            (v, result.proxies[v].t().float().cpu().contiguous())
            for v in self.variants)
        text_pred = result.predictions['text']
        changed = {
            v: float((result.predictions[v] != text_pred).float().mean())
            for v in self.variants
        }
        return learned, dict(
            num_features=int(feats.shape[0]),
            num_pooled=int(num_pooled),
            classes=int(num_cols),
            background=has_bg,
            col_marginal=marginal_kind,
            changed_predictions=changed,
            confident_fraction=dict(result.confident_fraction),
            seconds=float(sum(result.timings.values())))

    def _marginal(self, name, module, feats, text_proxies, imbalanced):
        """(col_marginal tensor or None, gamma, description) for one
        classifier."""
        gamma = self.hparams['gamma']
        mode: Union[str, List[float], None] = self.col_marginal
        if mode == 'auto':
            mode = 'predicted' if imbalanced and gamma == 0 else None
        if mode is None:
            return None, gamma, (f'predicted_mass^{gamma:g}'
                                 if gamma > 0 else 'uniform')
        num_cols = text_proxies.shape[1]
        if mode == 'predicted':
            pred = predict_with_proxies(
                feats, text_proxies, chunk_size=self.hparams['chunk_size'])
            counts = torch.bincount(pred.cpu(), minlength=num_cols)
            return ((counts.double() + 1) / (counts.sum() + num_cols), 0.0,
                    'predicted')
        if len(mode) != num_cols:
            bg = ' + background' if module.bg_embed is not None else ''
            raise ValueError(
                f'InMaPTestLoop: col_marginal has {len(mode)} weights but '
                f'{name} has {num_cols} columns ({module.num_classes} '
                f'classes{bg})')
        return torch.tensor(mode, dtype=torch.float64), 0.0, 'prior'


def run_on_rank0(fn: Callable[[list], Any], items: list, size: int, *,
                 collect_device: str, tmpdir: str) -> Any:
    """``fn(items of all ranks)`` on rank 0, its result on every rank.

    Args:
        fn (callable): Called on rank 0 with the gathered items.
        items (list): This rank's items, one per test sample it ran.
        size (int): The dataset size (drops the sampler's padding).
        collect_device (str): ``'cpu'`` (through files in ``tmpdir``,
            which the ranks must share) or ``'gpu'``.
        tmpdir (str): Folder of the CPU gather (removed after).

    Returns:
        The result of ``fn``, broadcast from rank 0.

    Raises:
        RuntimeError: ``fn`` failed on rank 0, with its traceback (a single
            process re-raises the error itself).
    """
    num_local = sum(it[name].shape[0] for it in items for name in it)
    gathered = collect_results(
        items,
        size,
        device=collect_device,
        tmpdir=tmpdir if collect_device == 'cpu' else None)
    rank, world_size = get_dist_info()
    payload, error = None, None
    if rank == 0:
        try:
            payload = fn(gathered)
        except Exception:  # re-raised on every rank below
            error = traceback.format_exc()
            if world_size == 1:
                raise
    del gathered
    if world_size > 1:
        box = [payload, error]
        broadcast_object_list(box, src=0)
        payload, error = box
        if error is not None:
            raise RuntimeError(
                f'InMaPTestLoop: learning the proxies failed on rank 0 '
                f'(this rank pooled {num_local} features):\n{error}')
    return payload

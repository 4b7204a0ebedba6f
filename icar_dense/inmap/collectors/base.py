"""What every InMaP feature collector shares, and their registry.

A collector pools, during the text pass of
:class:`~icar_dense.inmap.loop.InMaPTestLoop`, the visual embeddings the
text classifiers of the model compare with the class embeddings: forward
hooks on every classifier hand it ``(features, logits)`` of each call, and
the task decides which rows to keep (:meth:`BaseFeatureCollector.select`).
The base class turns those rows into one item per test sample, in dataset
order, so that ``collect_results`` gathers identical pools from 1 or N
processes.

A new task registers a collector; the loop is not edited::

    @INMAP_COLLECTORS.register_module(name='point')
    class PointCollector(BaseFeatureCollector):
        default_scope = 'mmdet3d'      # picked for configs of that scope
        options = dict(points_per_scene=512)

        def select(self, name, module, feats, logits):
            ...

Its ``options`` become options of the loop (``inmap=dict(...)`` in a
config) and are checked when the loop is built (:meth:`check_options`).
:class:`CollectorHook` tells the active collector where each test batch
starts and ends.
"""
import contextlib
from collections import OrderedDict
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.registry import Registry

__all__ = [
    'INMAP_COLLECTORS', 'BaseFeatureCollector', 'CollectorHook',
    'collector_options', 'find_text_classifiers', 'sample_keys'
]

#: Feature collectors by task name (``InMaPTestLoop(task=...)``).
INMAP_COLLECTORS = Registry('inmap collector', scope='icar_dense')

#: ``(classifier name, embeddings, sample index in the batch, label or
#: None)`` of one classifier call
Record = Tuple[str, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]

#: what InMaP calls on a text classifier (``TextClassifier`` has them all)
_CLASSIFIER_API = ('set_class_proxies', 'all_class_embeddings', 'embed_visual')


def find_text_classifiers(model: torch.nn.Module) -> Dict[str, Any]:
    """The modules InMaP can refine, by module name: those offering
    ``set_class_proxies``, ``all_class_embeddings`` and ``embed_visual``
    (every ``TextClassifier``; no import of the model package needed)."""
    return OrderedDict(
        (name, module) for name, module in model.named_modules() if all(
            callable(getattr(module, a, None)) for a in _CLASSIFIER_API))


def collector_options() -> Dict[str, Any]:
    """The options of every registered collector, with their defaults."""
    options = {}
    for cls in INMAP_COLLECTORS.module_dict.values():
        options.update(cls.options)
    return options


def sample_keys(data_batch: Any) -> Tuple[Optional[int], List[Any]]:
    """Batch size and a file key per sample, from ``data_samples``.

    ``(None, [])`` when the batch has no per-sample meta information (e.g.
    test-time augmentation, whose samples are lists of views).
    """
    samples = data_batch.get('data_samples') if isinstance(data_batch,
                                                           dict) else None
    if not isinstance(samples, (list, tuple)) or not samples:
        return None, []
    keys = []
    for sample in samples:
        meta = getattr(sample, 'metainfo', None)
        if not isinstance(meta, dict):
            return None, []
        keys.append(
            next((str(meta[k])
                  for k in ('img_path', 'filename', 'img_id', 'video_id')
                  if meta.get(k)), None))
    return len(samples), keys


class BaseFeatureCollector:
    """Pools the embeddings of the test set, per sample.

    Args:
        classifiers (Mapping[str, Module]): The text classifiers to hook, by
            module name.
        feature_dtype (str): Storage dtype of the pooled embeddings.
        seed (int): Seed of any sampling (fixed per sample file).
        **options: The values of :attr:`options` (all given by the loop).

    Attributes:
        items (list[dict[str, Tensor]]): One dict per test sample seen:
            classifier name -> ``(k, D)`` embeddings (on the CPU).
    """

    #: Config ``default_scope`` whose runs use this collector when the loop
    #: has no ``task`` (None: only by name).
    default_scope: ClassVar[Optional[str]] = None
    #: Loop options of this collector and their defaults.
    options: ClassVar[Dict[str, Any]] = {}
    #: Whether the pooled classes are imbalanced (pixels, regions): then
    #: ``col_marginal='auto'`` uses the predicted-class marginal.
    imbalanced: ClassVar[bool] = False

    def __init__(self, classifiers: Mapping[str, torch.nn.Module],
                 feature_dtype: str, seed: int, **options: Any) -> None:
        self.classifiers = classifiers
        self.dtype = getattr(torch, feature_dtype)
        self.seed = seed
        for key, value in options.items():
            setattr(self, key, value)
        self.items: List[Dict[str, torch.Tensor]] = []
        self.handles: list = []
        self._records: List[Record] = []
        self._batch_size: Optional[int] = None
        self._keys: List[Any] = []

    # ------------------------------------------------------------------
    # what a task defines
    # ------------------------------------------------------------------
    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise TypeError/ValueError for a bad value of :attr:`options`."""

    @classmethod
    def empty_hint(cls, options: Mapping[str, Any]) -> str:
        """What to check when a classifier gave no features."""
        return ''

    def select(
        self, name: str, module: torch.nn.Module, feats: torch.Tensor,
        logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """The rows of one classifier call to keep.

        Args:
            name (str): The classifier's module name.
            module (Module): The classifier.
            feats (Tensor): Its input, ``(..., in_channels)``.
            logits (Tensor): Its output, ``(..., C(+1))``.

        Returns:
            tuple: ``(k, D)`` embeddings (``module.embed_visual``), the
            ``(k,)`` sample index in the batch of each, and ``(k,)`` labels
            or None (handed to :meth:`reduce`).
        """
        raise NotImplementedError

    def reduce(self, index: int, parts: List[Tuple[torch.Tensor, Any]],
               feats: torch.Tensor) -> torch.Tensor:
        """The embeddings kept for sample ``index`` of the batch, from all
        its classifier calls (``parts``: (embeddings, labels) per call,
        ``feats``: their concatenation). Default: all of them."""
        return feats

    def text_pass(self, model: torch.nn.Module):
        """Context of the text pass, e.g. to route the model through the
        path that calls the classifiers. Default: nothing."""
        return contextlib.nullcontext()

    def attach(self, model: torch.nn.Module) -> None:
        """Register the hooks: one forward hook per classifier."""
        for name, module in self.classifiers.items():
            self.handles.append(
                module.register_forward_hook(self._hook_for(name)))

    # ------------------------------------------------------------------
    # the shared machinery
    # ------------------------------------------------------------------
    def remove(self) -> None:
        """Remove every hook."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def start_batch(self, data_batch: Any) -> None:
        self._batch_size, self._keys = sample_keys(data_batch)
        self._records = []

    def finish_batch(self, num_outputs: int) -> None:
        """Split the batch's embeddings into one item per output sample."""
        items = [dict() for _ in range(max(num_outputs, 1))]
        per_sample: Dict[Tuple[int, str], List[Tuple[torch.Tensor, Any]]] = {}
        for name, embeds, ids, labels in self._records:
            if ids.numel() and int(ids.max()) >= num_outputs:
                ids = torch.zeros_like(ids)  # cannot tell the samples apart
            for index in ids.unique().tolist():
                mask = ids == index
                per_sample.setdefault((index, name), []).append(
                    (embeds[mask], None if labels is None else labels[mask]))
        for (index, name), parts in per_sample.items():
            feats = torch.cat([p[0] for p in parts])
            items[index][name] = self.reduce(index, parts, feats)
        self.items.extend(items[:num_outputs])
        self._records = []

    def sample_key(self, index: int) -> str:
        """The file of sample ``index`` of the batch (seeds per file)."""
        key = self._keys[index] if index < len(self._keys) else None
        # without a file name: this rank's running count (rank-dependent)
        return key if key is not None else f'#{len(self.items) + index}'

    def default_ids(self, rows: int, device) -> torch.Tensor:
        """Sample index of each row when rows are the samples' blocks."""
        batch = self._batch_size or 1
        if rows % batch == 0 and rows > 0:
            return torch.arange(rows, device=device) // (rows // batch)
        return torch.zeros(rows, dtype=torch.long, device=device)

    def embed_rows(self, module, feats):
        """Every row, split among the samples in order."""
        rows = feats.reshape(-1, feats.shape[-1])
        return module.embed_visual(rows), self.default_ids(
            rows.shape[0], rows.device), None

    def _hook_for(self, name: str):

        def hook(module, args, output):
            if not args or not isinstance(args[0], torch.Tensor):
                return
            with torch.no_grad():
                embeds, ids, labels = self.select(name, module,
                                                  args[0].detach(),
                                                  output.detach())
            self._records.append((name, embeds.to('cpu',
                                                  self.dtype), ids.cpu(),
                                  None if labels is None else labels.cpu()))

        return hook


class CollectorHook(Hook):
    """Drives the collector of a test loop from the runner's iterations.

    ``before_test_iter`` starts a batch, ``after_test_iter`` ends it with
    the batch's predictions (their count is the number of samples, after
    ``TestLoop.run_iter`` has split off any loss element); nothing happens
    while ``owner.collector`` is None.

    Args:
        owner: An object with a ``collector`` attribute (the loop).
    """

    priority = 'HIGHEST'

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.owner.collector is not None:
            self.owner.collector.start_batch(data_batch)

    def after_test_iter(self,
                        runner,
                        batch_idx,
                        data_batch=None,
                        outputs=None) -> None:
        if self.owner.collector is not None:
            self.owner.collector.finish_batch(len(outputs))

"""InMaP at test time, for detection, segmentation and video recognition.

:class:`InMaPTestLoop` (registered in mmengine's root ``LOOPS``, so configs
of the mmdet, mmseg and mmaction2 scopes all find it) evaluates a model
twice: once with the text class embeddings, as ``TestLoop`` does, and once
with *vision proxies* learned by InMaP (:func:`learn_vision_proxies`) from
the features of the whole unlabeled test set.  Both results are returned,
logged and written to ``metrics_test.json`` side by side:
``acc/top1`` and ``inmap/acc/top1``, ``mIoU`` and ``inmap/mIoU``,
``coco/bbox_mAP`` and ``inmap/coco/bbox_mAP``.

Enable it from a config (``tools/test.py`` calls :func:`enable_inmap`)::

    inmap = dict(iters=2000, pixels_per_image=256)   # any option below

The loop:

1. runs the test set with the text proxies (all hooks, as ``TestLoop``),
   computing the normal metrics while forward hooks on every
   ``TextClassifier`` of the model collect visual embeddings (the
   projected, L2-normalised features the classifier compares with the class
   embeddings);
2. gathers the embeddings of all ranks on rank 0 (``collect_results``, in
   dataset order, so 1 and N processes learn from identical features),
   learns the proxies there (on the model's device) and broadcasts them;
3. sets them on the classifiers (``TextClassifier.set_class_proxies``),
   runs the test set again without iteration hooks and reports those
   metrics under ``<prefix>/`` (variant ``'full'``) or
   ``<prefix>_no_sinkhorn/``; the text embeddings are restored afterwards.

What is collected, by task (``task``; by default from the config's
``default_scope``):

* ``'clip'`` (mmaction): one embedding per clip x crop view given to the
  head (``average_views=True``: their mean per video);
* ``'pixel'`` (mmseg): ``pixels_per_image`` positions of the decode-head
  feature maps of every image (over all its sliding windows / test-time
  augmentations), chosen with a fixed seed per image file, either
  ``'uniform'`` or ``'stratified'`` by the predicted class (round-robin over
  the classes present, so small classes are not drowned by wall and sky);
* ``'region'`` (mmdet): RoIs whose best foreground score exceeds
  ``score_thr``, de-duplicated by class-aware NMS on the proposal boxes
  (``nms_iou``) and capped to the ``max_per_image`` best per image.  The
  background proxy of a softmax head (``background=True``) takes part in
  the pseudo-labels and is kept fixed (``fix_background``).

Class-imbalanced pools (pixels, regions) use the predicted-class marginal
for Sinkhorn by default (``col_marginal='auto'``): the histogram of the text
predictions over the pooled features (Laplace-smoothed), instead of the
uniform marginal of the paper's balanced ImageNet setting.

Proxies can be saved (``save_proxies=path``, or True for
``<work_dir>/inmap_proxies.pth``) and reused inductively on new data
(``load_proxies=path``: no learning; with ``text_pass=False`` the text
pass is skipped too).

Cost: the test set is run twice (plus the learning, seconds to a minute on
a GPU); memory on rank 0 is the pooled embeddings (n x 256 floats, e.g.
2000 images x 256 pixels = 0.5 GB in float32, ``feature_dtype='float16'``
halves it; ``max_features`` caps n).
"""
import copy
import inspect
import logging
import math
import os.path as osp
import traceback
import zlib
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import (broadcast_object_list, collect_results,
                           get_dist_info)
from mmengine.evaluator import DumpResults, Evaluator
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS, DefaultScope
from mmengine.runner import TestLoop
from mmengine.runner.amp import autocast

from .core import (_check_hparams, _check_positive, _check_variants,
                   _resolve_chunk_size, learn_vision_proxies, load_proxies,
                   predict_with_proxies, save_proxies)

#: ``progress='auto'``: a progress bar for runs of at least this many steps
PROGRESS_MIN_ITERS = 200

try:  # private in mmengine 0.10.x: splits a trailing loss element off
    from mmengine.runner.loops import _update_losses
except ImportError:  # pragma: no cover - other mmengine releases

    def _update_losses(outputs, losses):
        return outputs, losses


__all__ = ['InMaPTestLoop', 'enable_inmap', 'sample_pixels', 'TASKS']

#: Feature selection modes and the config scope each is the default of.
TASKS = OrderedDict(clip='mmaction', pixel='mmseg', region='mmdet')
_LEARNED = ('no_sinkhorn', 'full')
_DEFAULT_PROXY_FILE = 'inmap_proxies.pth'


def _text_classifier_class():
    from icar_dense.models.text.text_classifier import TextClassifier
    return TextClassifier


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def sample_pixels(num: int,
                  k: int,
                  generator: torch.Generator,
                  labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pick ``k`` of ``num`` positions, sorted, without replacement.

    Args:
        num (int): Number of positions.
        k (int): Number to pick (all when ``k >= num``).
        generator (torch.Generator): CPU generator (fixes the choice).
        labels (Tensor, optional): ``(num,)`` non-negative class per
            position: stratified sampling, round-robin over the classes in
            a random order (every class present gets ``min(count, ~k /
            classes)`` positions, the remainder goes to the larger ones).
            None: uniform.

    Returns:
        Tensor: ``(min(k, num),)`` int64 indices (CPU), ascending.
    """
    if k >= num:
        return torch.arange(num)
    perm = torch.randperm(num, generator=generator)
    if labels is None:
        return perm[:k].sort().values
    cls = labels.reshape(-1).long().cpu()[perm]
    # rank of every (permuted) position within its class
    order = torch.argsort(cls, stable=True)
    counts = torch.bincount(cls)
    offsets = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num) - offsets[cls[order]]
    pick = torch.argsort(rank, stable=True)[:k]
    return perm[pick].sort().values


def _sample_keys(data_batch: Any) -> Tuple[Optional[int], List[Any]]:
    """Batch size and a file key per sample, from ``data_samples``."""
    samples = data_batch.get('data_samples') if isinstance(data_batch,
                                                           dict) else None
    if not isinstance(samples, (list, tuple)) or not samples:
        return None, []
    keys = []
    for sample in samples:
        meta = getattr(sample, 'metainfo', None)
        if not isinstance(meta, dict):
            return None, []  # e.g. test-time augmentation: lists per view
        keys.append(
            next((str(meta[k])
                  for k in ('img_path', 'filename', 'img_id', 'video_id')
                  if meta.get(k)), None))
    return len(samples), keys


class _FeatureCollector:
    """Forward hooks that pool the embeddings of the test set, per sample."""

    def __init__(self, loop: 'InMaPTestLoop', model: torch.nn.Module,
                 classifiers: Dict[str, torch.nn.Module]) -> None:
        self.loop = loop
        self.classifiers = classifiers
        self.handles = []
        self.items: List[Dict[str, torch.Tensor]] = []
        self.dtype = getattr(torch, loop.feature_dtype)
        # (classifier, embeddings, sample index in the batch, predicted
        # class or None) of every classifier call of the current batch
        self._records: List[Tuple[str, torch.Tensor, torch.Tensor,
                                  Optional[torch.Tensor]]] = []
        self._batch_size: Optional[int] = None
        self._keys: List[Any] = []
        self._calls: Dict[Tuple[str, int], int] = {}
        self._pending_rois: Optional[torch.Tensor] = None
        self._num_batches = 0
        for name, module in classifiers.items():
            self.handles.append(
                module.register_forward_hook(self._hook_for(name)))
        if loop.task == 'region':
            self._hook_roi_extractors(model)

    def _hook_roi_extractors(self, model) -> None:
        try:
            from mmdet.models.roi_heads.roi_extractors import \
                BaseRoIExtractor
        except ImportError:  # pragma: no cover - mmdet is a dependency
            return
        for name, module in model.named_modules():
            if isinstance(module, BaseRoIExtractor) and \
                    'mask_roi_extractor' not in name:
                self.handles.append(
                    module.register_forward_pre_hook(self._remember_rois))

    def _remember_rois(self, module, args) -> None:
        rois = args[1] if len(args) > 1 else None
        if isinstance(rois, torch.Tensor) and rois.dim() == 2 and \
                rois.shape[1] == 5:
            self._pending_rois = rois.detach()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    # ------------------------------------------------------------------
    def start_batch(self, data_batch) -> None:
        self._batch_size, self._keys = _sample_keys(data_batch)
        self._records = []
        self._calls = {}
        self._pending_rois = None

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
            if self.loop.task == 'pixel':
                feats = self._image_budget(index, parts, feats)
            elif self.loop.average_views and self.loop.task == 'clip':
                feats = F.normalize(
                    feats.float().mean(0, keepdim=True), dim=-1).to(self.dtype)
            items[index][name] = feats
        self.items.extend(items[:num_outputs])
        self._records = []
        self._num_batches += 1

    def _sample_key(self, index: int) -> str:
        key = self._keys[index] if index < len(self._keys) else None
        # without a file name: this rank's running count (rank-dependent)
        return key if key is not None else f'#{len(self.items) + index}'

    def _image_budget(self, index, parts, feats):
        """At most ``pixels_per_image`` of an image's pixels (several calls
        per image: sliding windows, test-time augmentation)."""
        loop = self.loop
        if feats.shape[0] <= loop.pixels_per_image:
            return feats
        labels = (
            torch.cat([p[1] for p in parts])
            if loop.pixel_sampling == 'stratified' else None)
        seed = zlib.crc32(
            f'{loop.seed}|{self._sample_key(index)}|image'.encode())
        keep = sample_pixels(feats.shape[0], loop.pixels_per_image,
                             torch.Generator().manual_seed(seed), labels)
        return feats[keep]

    # ------------------------------------------------------------------
    def _hook_for(self, name: str):

        def hook(module, args, output):
            if not args or not isinstance(args[0], torch.Tensor):
                return
            with torch.no_grad():
                embeds, ids, labels = getattr(self, '_select_' +
                                              self.loop.task)(name, module,
                                                              args[0].detach(),
                                                              output.detach())
            self._records.append((name, embeds.to('cpu',
                                                  self.dtype), ids.cpu(),
                                  None if labels is None else labels.cpu()))

        return hook

    def _default_ids(self, rows: int, device) -> torch.Tensor:
        batch = self._batch_size or 1
        if rows % batch == 0 and rows > 0:
            return torch.arange(rows, device=device) // (rows // batch)
        return torch.zeros(rows, dtype=torch.long, device=device)

    def _select_clip(self, name, module, feats, logits):
        rows = feats.reshape(-1, feats.shape[-1])
        return module.embed_visual(rows), self._default_ids(
            rows.shape[0], rows.device), None

    def _select_pixel(self, name, module, feats, logits):
        if feats.dim() < 3:  # not a feature map: every row
            return self._select_clip(name, module, feats, logits)
        loop = self.loop
        num = feats.shape[0]
        flat = feats.reshape(num, -1, feats.shape[-1])
        labels = (
            logits.reshape(num, -1, logits.shape[-1]).argmax(-1)
            if loop.pixel_sampling == 'stratified' else None)
        batch = self._batch_size or 1
        embeds, ids, picked = [], [], []
        for n in range(num):
            sample = n % batch if num % batch == 0 else 0
            call = self._calls.get((name, n), 0)
            self._calls[(name, n)] = call + 1
            seed = zlib.crc32(
                f'{loop.seed}|{self._sample_key(sample)}|{call}'.encode())
            generator = torch.Generator().manual_seed(seed)
            index = sample_pixels(flat.shape[1], loop.pixels_per_image,
                                  generator,
                                  None if labels is None else labels[n])
            embeds.append(module.embed_visual(flat[n, index.to(flat.device)]))
            ids.append(torch.full((index.numel(), ), sample, dtype=torch.long))
            if labels is not None:
                picked.append(labels[n][index.to(labels.device)])
        return (torch.cat(embeds), torch.cat(ids),
                torch.cat(picked) if picked else None)

    def _select_region(self, name, module, feats, logits):
        loop = self.loop
        rows = feats.reshape(-1, feats.shape[-1])
        logits = logits.reshape(rows.shape[0], -1).float()
        num_classes = module.num_classes
        if module.bg_embed is not None:  # softmax head, background last
            scores = logits.softmax(-1)[:, :num_classes]
        else:  # sigmoid head
            scores = logits[:, :num_classes].sigmoid()
        best, label = scores.max(-1)
        rois, self._pending_rois = self._pending_rois, None
        if rois is not None and rois.shape[0] == rows.shape[0]:
            ids = rois[:, 0].long().to(rows.device)
            boxes = rois[:, 1:].float().to(rows.device)
        else:
            ids, boxes = self._default_ids(rows.shape[0], rows.device), None
        keep = torch.nonzero(best > loop.score_thr).squeeze(1)
        if boxes is not None and loop.nms_iou is not None and keep.numel():
            from torchvision.ops import batched_nms
            groups = ids[keep] * (num_classes + 1) + label[keep]
            keep = keep[batched_nms(boxes[keep], best[keep], groups,
                                    loop.nms_iou)]
        if loop.max_per_image is not None and keep.numel():
            # best first, then the rank of each RoI within its image
            keep = keep[torch.argsort(
                best[keep], descending=True, stable=True)]
            keep = keep[torch.argsort(ids[keep], stable=True)]
            kept_ids = ids[keep]
            counts = torch.bincount(kept_ids)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(keep.numel(), device=keep.device) - \
                starts[kept_ids]
            keep = keep[rank < loop.max_per_image]
        return module.embed_visual(rows[keep]), ids[keep], None


@LOOPS.register_module()
class InMaPTestLoop(TestLoop):
    """Test with the text proxies, then with InMaP vision proxies.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): Test dataloader (or its config).
        evaluator (Evaluator | dict | list): Test evaluator (or config).
        fp16 (bool): Autocast the test steps. Defaults to False.
        task (str, optional): ``'clip'``, ``'pixel'`` or ``'region'``; None
            picks it from the config's ``default_scope`` (mmaction, mmseg,
            mmdet).
        tau_t, tau_i, alpha, gamma, sinkhorn_iters, iters, lr, chunk_size:
            Hyper-parameters of :func:`learn_vision_proxies` (defaults of
            the paper: 0.01, 0.04, 0.6, 0, 20, 2000, 10, auto).
        col_marginal (str | Sequence[float] | None): Sinkhorn column
            marginal: None (uniform, or ``predicted mass ** gamma`` with
            ``gamma > 0``), ``'predicted'`` (Laplace-smoothed histogram of
            the text predictions of the pooled features), a list with one
            non-negative weight per column (background last for a softmax
            detector), or ``'auto'`` (default): ``'predicted'`` for pixels
            and regions when ``gamma == 0``, else None.
        variants (str | Sequence[str]): Learned proxies to evaluate,
            ``'full'`` (Sinkhorn pseudo-labels) and/or ``'no_sinkhorn'``;
            each costs one more pass over the test set. Default ``'full'``.
        classifiers (Sequence[str], optional): Module names (e.g.
            ``'decode_head.text_classifier'``) of the text classifiers to
            refine; None takes every ``TextClassifier`` called in the test.
        pixels_per_image (int): Pixels per image, drawn from the decode
            feature maps of all its windows. Default 256.
        pixel_sampling (str): ``'stratified'`` (by predicted class, default)
            or ``'uniform'``.
        score_thr (float): Regions: minimum best foreground score.
            Default 0.05.
        nms_iou (float | None): Regions: IoU of the class-aware NMS over the
            proposal boxes; None keeps overlapping RoIs. Default 0.5.
        max_per_image (int | None): Regions: at most this many RoIs per
            image (highest scores). Default 100.
        fix_background (bool): Keep the background proxy of a softmax
            detector fixed. Default True.
        average_views (bool): Clips: one mean embedding per video instead
            of one per clip x crop view. Default False.
        max_features (int, optional): Learn from at most this many pooled
            features per classifier (a seeded random subset).
        feature_dtype (str): Storage dtype of the pooled embeddings,
            ``'float32'`` or ``'float16'``/``'bfloat16'`` (learning upcasts).
        device (str): Where to learn: ``'auto'`` (the model's device),
            ``'cpu'``, ``'cuda'``...
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
        progress (bool | str): Progress bar of the learning steps (rank 0,
            stderr). ``'auto'`` (default): on for runs of at least
            ``PROGRESS_MIN_ITERS`` steps (the default 2000 steps take
            minutes), off for shorter ones.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 fp16: bool = False,
                 task: Optional[str] = None,
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
                 classifiers: Optional[Sequence[str]] = None,
                 pixels_per_image: int = 256,
                 pixel_sampling: str = 'stratified',
                 score_thr: float = 0.05,
                 nms_iou: Optional[float] = 0.5,
                 max_per_image: Optional[int] = 100,
                 fix_background: bool = True,
                 average_views: bool = False,
                 max_features: Optional[int] = None,
                 feature_dtype: str = 'float32',
                 device: str = 'auto',
                 collect_device: str = 'cpu',
                 seed: int = 0,
                 save_proxies: Union[str, bool, None] = None,
                 load_proxies: Optional[str] = None,
                 text_pass: bool = True,
                 prefix: str = 'inmap',
                 progress: Union[bool, str] = 'auto') -> None:
        # options are checked before the dataloader and evaluator are built
        name = type(self).__name__
        if task is None:
            task = self._task_from_scope(runner)
        if task not in TASKS:
            raise ValueError(f'{name}: task must be one of {list(TASKS)}, '
                             f'got {task!r}')
        self.task = task
        variants = _check_variants(variants)
        if 'text' in variants:
            raise ValueError(f"{name}: variants are the learned proxies "
                             f"{_LEARNED}; the text metrics are always "
                             "reported (without prefix)")
        self.variants = variants
        if isinstance(col_marginal, str):
            if col_marginal not in ('auto', 'predicted'):
                raise ValueError(f"{name}: col_marginal must be 'auto', "
                                 f"'predicted', None or a list of weights, "
                                 f'got {col_marginal!r}')
            if col_marginal == 'predicted' and gamma > 0:
                raise ValueError(f"{name}: col_marginal='predicted' and "
                                 'gamma > 0 both set the marginal; use one')
        elif col_marginal is not None:
            col_marginal = [float(v) for v in col_marginal]
        try:
            _check_hparams(
                tau_t, tau_i, alpha, gamma, sinkhorn_iters,
                None if isinstance(col_marginal, str) else col_marginal)
            # learning only starts after a whole test pass: check now
            _check_positive('lr', lr)
            _resolve_chunk_size(chunk_size, 1, 1)
            if nms_iou is not None:
                _check_positive('nms_iou', nms_iou)
        except (TypeError, ValueError) as err:
            raise type(err)(f'{name}: {err}') from None
        if isinstance(score_thr, bool) or not isinstance(
                score_thr, (int, float)) or not 0 <= score_thr <= 1:
            raise ValueError(f'{name}: score_thr must be a number in [0, 1], '
                             f'got {score_thr!r}')
        self.hparams = dict(
            tau_t=tau_t,
            tau_i=tau_i,
            alpha=alpha,
            gamma=gamma,
            sinkhorn_iters=sinkhorn_iters,
            iters=iters,
            lr=lr,
            chunk_size=chunk_size)
        self.col_marginal = col_marginal
        for key, value, low in (('pixels_per_image', pixels_per_image,
                                 1), ('max_per_image', max_per_image, 1),
                                ('max_features', max_features, 1), ('iters',
                                                                    iters, 0)):
            if value is not None and (isinstance(
                    value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f'{name}: {key} must be an int >= {low}, '
                                 f'got {value!r}')
        if pixel_sampling not in ('stratified', 'uniform'):
            raise ValueError(f"{name}: pixel_sampling must be 'stratified' "
                             f"or 'uniform', got {pixel_sampling!r}")
        if nms_iou is not None and not 0 < nms_iou <= 1:
            raise ValueError(f'{name}: nms_iou must be in (0, 1] or None, '
                             f'got {nms_iou!r}')
        if feature_dtype not in ('float32', 'float16', 'bfloat16', 'float64'):
            raise ValueError(f'{name}: feature_dtype must be float32, '
                             f'float16, bfloat16 or float64, got '
                             f'{feature_dtype!r}')
        if collect_device not in ('cpu', 'gpu'):
            raise ValueError(f"{name}: collect_device must be 'cpu' or "
                             f"'gpu', got {collect_device!r}")
        if load_proxies is not None and not osp.isfile(load_proxies):
            raise FileNotFoundError(
                f'{name}: load_proxies file {load_proxies!r} not found')
        if not text_pass and load_proxies is None:
            raise ValueError(f'{name}: text_pass=False needs load_proxies '
                             '(the features come from the text pass)')
        self.classifier_names = (None if classifiers is None else
                                 [str(c) for c in classifiers])
        self.pixels_per_image = pixels_per_image
        self.pixel_sampling = pixel_sampling
        self.score_thr = float(score_thr)
        self.nms_iou = nms_iou
        self.max_per_image = max_per_image
        self.fix_background = fix_background
        self.average_views = average_views
        self.max_features = max_features
        self.feature_dtype = feature_dtype
        self.device = device
        self.collect_device = collect_device
        self.seed = int(seed)
        if save_proxies is True:
            save_proxies = osp.join(runner.work_dir, _DEFAULT_PROXY_FILE)
        self.save_path = save_proxies or None
        self.load_path = load_proxies
        self.text_pass = text_pass
        self.prefix = prefix
        if progress not in (True, False, 'auto'):
            raise ValueError(f"{name}: progress must be True, False or "
                             f"'auto', got {progress!r}")
        self.progress = progress
        #: name -> variant -> (C(+1), D) proxies of the last run (CPU)
        self.proxies: Dict[str, Dict[str, torch.Tensor]] = {}
        #: name -> statistics of the last learning (number of features...)
        self.summary: Dict[str, Dict[str, Any]] = {}
        self._collector: Optional[_FeatureCollector] = None
        super().__init__(runner, dataloader, evaluator, fp16)

    @staticmethod
    def _task_from_scope(runner) -> str:
        cfg = getattr(runner, 'cfg', None)
        scope = cfg.get('default_scope') if cfg is not None else None
        if scope is None:
            current = DefaultScope.get_current_instance()
            scope = current.scope_name if current is not None else None
        for task, task_scope in TASKS.items():
            if scope == task_scope:
                return task
        raise ValueError(
            f'InMaPTestLoop: cannot tell the task from default_scope '
            f'{scope!r}; set inmap=dict(task=...) to one of {list(TASKS)}')

    # ------------------------------------------------------------------
    def _classifiers(self) -> Dict[str, torch.nn.Module]:
        model = _unwrap(self.runner.model)
        cls = _text_classifier_class()
        found = OrderedDict((name, module)
                            for name, module in model.named_modules()
                            if isinstance(module, cls))
        if not found:
            raise TypeError(
                f'InMaPTestLoop: the model {type(model).__name__} has no '
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
        if self.device != 'auto':
            return torch.device(self.device)
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
                self._collector = None  # frees the pooled features
            self.proxies = proxies
            for variant in self.variants:
                scored = self._rescore(classifiers, proxies, variant)
                prefix = self._metric_prefix(variant)
                metrics.update((f'{prefix}/{key}', value)
                               for key, value in scored.items())
        finally:
            self._collector_remove()
            for module in classifiers.values():
                module.set_class_proxies(None)
        self._log_metrics(metrics)
        runner.call_hook('after_test_epoch', metrics=metrics)
        runner.call_hook('after_test')
        return metrics

    def _collector_remove(self) -> None:
        if self._collector is not None:
            self._collector.remove()

    def _text_pass(self, classifiers, collect: bool) -> dict:
        model = _unwrap(self.runner.model)
        self._collector = (
            _FeatureCollector(self, model, classifiers) if collect else None)
        # the exact large-vocabulary argmax of ICAREncoderDecoder never calls
        # the classifier's forward, which is where the pixels are pooled
        large_vocab = getattr(model, 'large_vocab', None)
        if collect and getattr(model, 'uses_large_vocab_path',
                               lambda: False)():
            print_log(
                'InMaPTestLoop: the text pass uses the dense segmentation '
                'path (mmseg logits) to pool pixel embeddings; the '
                'large-vocabulary argmax is used again for the InMaP pass',
                logger='current')
            model.large_vocab = None
        try:
            self.test_loss.clear()
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
        finally:
            if large_vocab is not None:
                model.large_vocab = large_vocab
            self._collector_remove()
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        if self.test_loss:
            from mmengine.runner.loops import _parse_losses
            metrics.update(_parse_losses(self.test_loss, 'test'))
        return metrics

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """``TestLoop.run_iter``, collecting embeddings in the text pass."""
        self.runner.call_hook(
            'before_test_iter', batch_idx=idx, data_batch=data_batch)
        collector = self._collector
        if collector is not None:
            collector.start_batch(data_batch)
        with autocast(enabled=self.fp16):
            outputs = self.runner.model.test_step(data_batch)
        outputs, self.test_loss = _update_losses(outputs, self.test_loss)
        if collector is not None:
            collector.finish_batch(len(outputs))
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(
            'after_test_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=outputs)

    # ------------------------------------------------------------------
    def _learn(self, classifiers) -> Dict[str, Dict[str, torch.Tensor]]:
        """Gather the embeddings on rank 0, learn there, broadcast."""
        # every rank computes the text proxies (a collective when the
        # vocabulary encoding is sharded; cached after the text pass)
        text = OrderedDict((name, module.all_class_embeddings().detach())
                           for name, module in classifiers.items())
        items = self._collector.items if self._collector is not None else []
        num_local = sum(it[name].shape[0] for it in items for name in it)
        gathered = collect_results(
            items,
            len(self.dataloader.dataset),
            device=self.collect_device,
            tmpdir=(osp.join(self.runner.work_dir, '.inmap_gather')
                    if self.collect_device == 'cpu' else None))
        rank, world_size = get_dist_info()
        payload, error = None, None
        if rank == 0:
            try:
                payload = self._learn_on_rank0(classifiers, text, gathered)
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
        proxies, self.summary = payload
        return proxies

    @property
    def show_progress(self) -> bool:
        """Whether the learning steps show a progress bar."""
        if self.progress == 'auto':
            return int(self.hparams['iters']) >= PROGRESS_MIN_ITERS
        return bool(self.progress)

    def _learn_on_rank0(self, classifiers, text, gathered):
        device = self._model_device()
        proxies, summary = OrderedDict(), OrderedDict()
        for name, module in classifiers.items():
            parts = [it[name] for it in gathered if name in it]
            feats = torch.cat(parts) if parts else None
            if feats is None or feats.shape[0] == 0:
                print_log(
                    f'InMaPTestLoop: {name} gave no features (task '
                    f'{self.task!r}; for regions check score_thr='
                    f'{self.score_thr}): it keeps its text proxies',
                    logger='current',
                    level=logging.WARNING)
                continue
            num_pooled = feats.shape[0]
            if self.max_features is not None and \
                    num_pooled > self.max_features:
                generator = torch.Generator().manual_seed(self.seed)
                keep = torch.randperm(
                    num_pooled, generator=generator)[:self.max_features]
                feats = feats[keep.sort().values]
            feats = feats.to(device)
            text_proxies = text[name].t().to(device, torch.float32)
            if feats.dtype == torch.float64:
                text_proxies = text_proxies.double()
            num_cols = text_proxies.shape[1]
            fixed = None
            has_bg = module.bg_embed is not None
            if has_bg and self.fix_background:
                fixed = torch.zeros(num_cols, dtype=torch.bool)
                fixed[-1] = True
            marginal, gamma, marginal_kind = self._marginal(
                name, module, feats, text_proxies)
            hparams = dict(self.hparams, gamma=gamma)
            result = learn_vision_proxies(
                feats,
                text_proxies,
                col_marginal=marginal,
                fixed_proxies=fixed,
                variants=('text', ) + self.variants,
                progress=self.show_progress,
                **hparams)
            proxies[name] = OrderedDict(
                (v, result.proxies[v].t().float().cpu().contiguous())
                for v in self.variants)
            changed = {
                v:
                float((result.predictions[v]
                       != result.predictions['text']).float().mean())
                for v in self.variants
            }
            summary[name] = dict(
                num_features=int(feats.shape[0]),
                num_pooled=int(num_pooled),
                classes=int(num_cols),
                background=has_bg,
                col_marginal=marginal_kind,
                changed_predictions=changed,
                confident_fraction=dict(result.confident_fraction),
                seconds=float(sum(result.timings.values())))
            print_log(
                f'InMaPTestLoop: {name}: learned {list(self.variants)} '
                f'proxies of {num_cols} classes from {feats.shape[0]} '
                f'{self.task} features in {summary[name]["seconds"]:.1f}s; '
                f'pooled predictions changed: ' +
                ', '.join(f'{v} {c:.1%}' for v, c in changed.items()),
                logger='current')
        if not proxies:
            raise RuntimeError(
                'InMaPTestLoop: no text classifier gave features '
                f'(task {self.task!r}); nothing to learn. Classifiers: '
                f'{list(classifiers)}')
        if self.save_path:
            self._save(classifiers, proxies, summary)
        return proxies, summary

    def _marginal(self, name, module, feats, text_proxies):
        """(col_marginal tensor or None, gamma, description) for one
        classifier."""
        gamma = self.hparams['gamma']
        mode = self.col_marginal
        if mode == 'auto':
            mode = ('predicted' if self.task in ('pixel', 'region')
                    and gamma == 0 else None)
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

    # ------------------------------------------------------------------
    def _save(self, classifiers, proxies, summary) -> None:
        table = OrderedDict()
        for name, per_variant in proxies.items():
            for variant, value in per_variant.items():
                table[f'{variant}/{name}'] = value.t().contiguous()
        first = next(iter(classifiers.values()))
        meta = dict(
            class_names=list(first.class_names),
            background={
                n: m.bg_embed is not None
                for n, m in classifiers.items()
            },
            task=self.task,
            checkpoint=self.runner.cfg.get('load_from') if getattr(
                self.runner, 'cfg', None) is not None else None,
            options=dict(
                self.hparams,
                col_marginal=self.col_marginal,
                pixels_per_image=self.pixels_per_image,
                pixel_sampling=self.pixel_sampling,
                score_thr=self.score_thr,
                nms_iou=self.nms_iou,
                max_per_image=self.max_per_image,
                fix_background=self.fix_background,
                average_views=self.average_views,
                seed=self.seed),
            summary=summary)
        save_proxies(self.save_path, table, meta=meta)
        print_log(
            f'InMaPTestLoop: saved the proxies to {self.save_path}',
            logger='current')

    def _load(self, classifiers) -> Dict[str, Dict[str, torch.Tensor]]:
        path = self.load_path
        data = load_proxies(path)
        table = data['proxies']
        names = (data['meta'] or {}).get('class_names') or \
            data['class_names']
        if isinstance(table, torch.Tensor):
            if len(classifiers) != 1:
                raise ValueError(
                    f'InMaPTestLoop: {path} holds one proxy tensor but the '
                    f'model has {len(classifiers)} text classifiers '
                    f'{list(classifiers)}; save with save_proxies')
            table = {
                f'{v}/{next(iter(classifiers))}': table
                for v in self.variants
            }
        proxies = OrderedDict()
        for name, module in classifiers.items():
            if names is not None and list(names) != module.class_names:
                raise ValueError(
                    f'InMaPTestLoop: the proxies in {path} are for '
                    f'{len(names)} classes {list(names)[:5]}... but {name} '
                    f'has {module.num_classes} classes '
                    f'{module.class_names[:5]}...: use the same vocabulary')
            proxies[name] = OrderedDict()
            for variant in self.variants:
                key = f'{variant}/{name}'
                if key not in table:
                    raise KeyError(
                        f'InMaPTestLoop: {path} has no proxies {key!r}; it '
                        f'holds {sorted(table)}')
                value = table[key]
                cols = module.num_classes + (module.bg_embed is not None)
                if value.shape != (module.embed_dim, cols):
                    raise ValueError(
                        f'InMaPTestLoop: proxies {key!r} of {path} have '
                        f'shape {tuple(value.shape)}, {name} needs '
                        f'({module.embed_dim}, {cols})')
                proxies[name][variant] = value.t().float().contiguous()
        print_log(
            f'InMaPTestLoop: loaded the proxies of {path}', logger='current')
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
            outputs, _ = _update_losses(outputs, {})
            evaluator.process(data_samples=outputs, data_batch=data_batch)
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
    allowed = [
        p for p in inspect.signature(InMaPTestLoop.__init__).parameters
        if p not in ('self', 'runner', 'dataloader', 'evaluator')
    ]
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

"""Object detection (mmdet): the confident, de-duplicated RoIs of an image."""
import torch

from ..checks import check_optional_int, check_positive
from .base import INMAP_COLLECTORS, BaseFeatureCollector

__all__ = ['RegionCollector']


@INMAP_COLLECTORS.register_module(name='region')
class RegionCollector(BaseFeatureCollector):
    """RoIs whose best foreground score exceeds ``score_thr``.

    The RoIs are de-duplicated by class-aware NMS on the proposal boxes and
    capped to the best ``max_per_image`` per image. The boxes and image
    indices come from a pre-hook on the box RoI extractors (mmdet's
    ``BaseRoIExtractor``), which run just before the classifier of the same
    stage.

    Options:
        score_thr (float): Minimum best foreground score. Default 0.05.
        nms_iou (float | None): IoU of the class-aware NMS over the proposal
            boxes; None keeps overlapping RoIs. Default 0.5.
        max_per_image (int | None): At most this many RoIs per image
            (highest scores). Default 100.
    """

    default_scope = 'mmdet'
    options = dict(score_thr=0.05, nms_iou=0.5, max_per_image=100)
    imbalanced = True

    @classmethod
    def check_options(cls, options):
        nms_iou = options['nms_iou']
        if nms_iou is not None:
            check_positive('nms_iou', nms_iou)
            if not 0 < nms_iou <= 1:
                raise ValueError(f'nms_iou must be in (0, 1] or None, '
                                 f'got {nms_iou!r}')
        score_thr = options['score_thr']
        if isinstance(score_thr, bool) or not isinstance(
                score_thr, (int, float)) or not 0 <= score_thr <= 1:
            raise ValueError(f'score_thr must be a number in [0, 1], '
                             f'got {score_thr!r}')
        check_optional_int('max_per_image', options['max_per_image'], 1)

    @classmethod
    def empty_hint(cls, options):
        return f'; check score_thr={options["score_thr"]}'

    def attach(self, model):
        super().attach(model)
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

    def start_batch(self, data_batch) -> None:
        super().start_batch(data_batch)
        self._pending_rois = None

    def select(self, name, module, feats, logits):
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
            ids, boxes = self.default_ids(rows.shape[0], rows.device), None
        keep = torch.nonzero(best > self.score_thr).squeeze(1)
        if boxes is not None and self.nms_iou is not None and keep.numel():
            from torchvision.ops import batched_nms
            groups = ids[keep] * (num_classes + 1) + label[keep]
            keep = keep[batched_nms(boxes[keep], best[keep], groups,
                                    self.nms_iou)]
        if self.max_per_image is not None and keep.numel():
            # best first, then the rank of each RoI within its image
            keep = keep[torch.argsort(
                best[keep], descending=True, stable=True)]
            keep = keep[torch.argsort(ids[keep], stable=True)]
            kept_ids = ids[keep]
            counts = torch.bincount(kept_ids)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(keep.numel(), device=keep.device) - \
                starts[kept_ids]
            keep = keep[rank < self.max_per_image]
        return module.embed_visual(rows[keep]), ids[keep], None

"""Sigmoid / federated classification loss for open-vocabulary box heads.

Plain sigmoid cross-entropy treats every class as an independent binary
problem (the background is "all zeros").  The federated loss of Detic
(Zhou et al., ECCV 2022) evaluates it only on a class subset per batch: the
classes present in the batch plus negatives drawn with probability
proportional to ``image_count ** 0.5`` (the LVIS category frequency), so that
the many rare classes are not pushed down as negatives in every image.

The loss follows mmdet's custom-classifier interface (``custom_cls_channels``
/ ``custom_activation`` / ``custom_accuracy``, like mmdet's ``SeesawLoss``),
so mmdet's ``BBoxHead`` uses its activation at test time and its accuracy in
training without further changes.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import Tensor


def load_class_frequencies(ann_file: str, key: str = 'image_count') -> list:
    """Per-category ``image_count`` of an LVIS json, in category-id order.

    Args:
        ann_file (str): LVIS (v1) annotation file.
        key (str): The category field to read. Defaults to 'image_count'.

    Returns:
        list[float]: One value per category, sorted by category id (the
        label order of mmdet's LVIS datasets).
    """
    from icar_dense.datasets.det_ov import load_categories
    categories = load_categories(ann_file)
    if not categories:
        raise ValueError(f'{ann_file}: no "categories" to read {key!r} from')
    missing = [c.get('name', c.get('id')) for c in categories if key not in c]
    if missing:
        raise KeyError(f'{ann_file}: {len(missing)} categories have no '
                       f'{key!r} field (e.g. {missing[:3]}); the federated '
                       'loss needs it (LVIS v1 files have it)')
    return [float(c[key]) for c in categories]


@MODELS.register_module()
class SigmoidFederatedLoss(nn.Module):
    """Sigmoid cross-entropy, optionally federated over a class subset.

    The classifier has one output per class and no background output: a
    background RoI is the all-zero target.

    Args:
        federated (bool): Evaluate the loss only on the classes present in
            the batch plus ``num_sample_classes`` sampled ones.  False gives
            plain sigmoid cross-entropy over all (trained) classes.
            Defaults to True.
        num_sample_classes (int): Size of the class subset (Detic: 50).
        class_freq (str | Sequence[float], optional): Per-class image counts
            (label order), or an LVIS json whose ``categories[].image_count``
            is read.  None samples negatives uniformly.
        freq_power (float): Sampling weight = ``class_freq ** freq_power``.
            Defaults to 0.5.
        reduction (str): 'mean', 'sum' or 'none'. Defaults to 'mean'.
        loss_weight (float): Defaults to 1.0.
    """

    def __init__(self,
                 federated: bool = True,
                 num_sample_classes: int = 50,
                 class_freq: Optional[Union[str, Sequence[float]]] = None,
                 freq_power: float = 0.5,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.federated = federated
        self.num_sample_classes = num_sample_classes
        self.freq_power = freq_power
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.use_sigmoid = True
        # mmdet's BBoxHead asks the loss for these (see SeesawLoss)
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True
        self.class_freq_source = class_freq if isinstance(class_freq,
                                                          str) else None
        if isinstance(class_freq, str):
            class_freq = load_class_frequencies(class_freq)
        if class_freq is not None:
            weights = torch.as_tensor(class_freq, dtype=torch.float)
            if weights.dim() != 1 or (weights < 0).any():
                raise ValueError('class_freq must be non-negative counts, '
                                 'one per class')
            self.register_buffer(
                'sample_weights', weights.pow(freq_power), persistent=False)
        else:
            self.sample_weights = None
        # classes that may receive a loss (set by the head: base classes)
        self.allowed_classes: Optional[Tensor] = None

    # -- mmdet custom-classifier interface ---------------------------------
    def get_cls_channels(self, num_classes: int) -> int:
        """No background output: one logit per class."""
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Sigmoid scores plus a background column (mmdet's NMS drops it)."""
        scores = cls_score.sigmoid()
        bg = (1 - scores.sum(dim=-1, keepdim=True)).clamp(min=0, max=1)
        return torch.cat([scores, bg], dim=-1)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> dict:
        pos = labels < cls_score.size(-1)
        return dict(acc=accuracy(cls_score[pos], labels[pos]))

    def set_allowed_classes(self, mask: Optional[Tensor]) -> None:
        """Restrict the loss (and negative sampling) to ``mask`` classes."""
        self.allowed_classes = mask

    # -- loss ---------------------------------------------------------------
    def _federated_mask(self, labels: Tensor, num_classes: int,
                        allowed: Optional[Tensor]) -> Tensor:
        device = labels.device
        if self.sample_weights is not None:
            if self.sample_weights.numel() != num_classes:
                raise ValueError(
                    f'SigmoidFederatedLoss: class_freq has '
                    f'{self.sample_weights.numel()} entries '
                    f'({self.class_freq_source or "list"}) but the classifier '
                    f'has {num_classes} classes')
            prob = self.sample_weights.to(device).clone()
        else:
            prob = torch.ones(num_classes, device=device)
        if allowed is not None:
            prob = prob * allowed.to(device, prob.dtype)
        present = labels[labels < num_classes].unique()
        mask = torch.zeros(num_classes, device=device)
        mask[present] = 1
        prob[present] = 0
        num_extra = min(self.num_sample_classes - present.numel(),
                        int((prob > 0).sum()))
        if num_extra > 0:
            extra = torch.multinomial(prob, num_extra, replacement=False)
            mask[extra] = 1
        return mask

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """Loss of ``cls_score`` (N, C) against labels in [0, C] (C = bg)."""
        assert reduction_override in (None, 'none', 'mean', 'sum')
        reduction = reduction_override or self.reduction
        num_rois, num_classes = cls_score.shape
        target = F.one_hot(label.clamp(max=num_classes),
                           num_classes + 1)[:, :num_classes].to(
                               cls_score.dtype)
        loss = F.binary_cross_entropy_with_logits(
            cls_score, target, reduction='none')
        elem_weight = cls_score.new_ones(num_rois, num_classes)
        if weight is not None:
            elem_weight = elem_weight * weight.view(-1, 1).to(cls_score.dtype)
        allowed = self.allowed_classes
        if allowed is not None:
            if allowed.numel() != num_classes:
                raise ValueError(
                    f'SigmoidFederatedLoss: the allowed-class mask has '
                    f'{allowed.numel()} entries, the classifier '
                    f'{num_classes} classes')
            elem_weight = elem_weight * allowed.to(cls_score)[None]
        if self.federated:
            elem_weight = elem_weight * self._federated_mask(
                label, num_classes, allowed).to(cls_score)[None]
        loss = weight_reduce_loss(
            loss, elem_weight, reduction=reduction, avg_factor=avg_factor)
        return self.loss_weight * loss

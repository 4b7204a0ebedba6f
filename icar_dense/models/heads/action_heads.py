"""Language classification head for video recognition (mmaction2).

``ICARVideoHead`` is mmaction2's ``I3DHead`` with its linear classifier
``fc_cls`` replaced by the shared :class:`TextClassifier`: the backbone
feature map is averaged over time and space, goes through dropout, the
visual projection (``Linear(in_channels -> 256, bias=False)``, loaded from
the checkpoint's ``visual_model.projector.weight``) and is compared by
cosine similarity with the class text embeddings, divided by tau.

Everything else is mmaction's ``BaseHead``: the loss (with label
smoothing), the training top-k accuracies and ``predict_by_feat``, which
averages the scores of the clips x crops of a video (``average_clips``).
The text classifier encodes one random prompt per class per training step
and, in eval mode, the cached prompt ensemble.
"""
import copy
from typing import List, Optional, Union

import torch
import torch.nn as nn
from mmaction.models.heads import BaseHead
from mmaction.registry import MODELS
from mmaction.utils import ConfigType


@MODELS.register_module()
class ICARVideoHead(BaseHead):
    """Video classification head with a text classifier.

    Args:
        num_classes (int): Number of classes; must equal the size of the
            text classifier's vocabulary (``tools/test.py --vocabulary``
            sets both).
        in_channels (int): Channels of the backbone output (1024 for
            Swin-B).
        text_classifier (dict): ``TextClassifier`` config; its
            ``in_channels`` defaults to ``in_channels`` (the visual
            projection maps the pooled feature to the joint space).
        loss_cls (dict): Loss config. Defaults to cross-entropy.
        spatial_type (str | None): ``'avg'`` pools over time, height and
            width; None expects already pooled ``(N, C)`` features.
        dropout_ratio (float): Dropout before the projection.
            Defaults to 0.5.
        **kwargs: ``BaseHead`` arguments (``average_clips``, ``topk``,
            ``label_smooth_eps``, ``init_cfg``, ...).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 text_classifier: ConfigType,
                 loss_cls: ConfigType = dict(type='CrossEntropyLoss'),
                 spatial_type: Optional[str] = 'avg',
                 dropout_ratio: float = 0.5,
                 **kwargs) -> None:
        super().__init__(num_classes, in_channels, loss_cls, **kwargs)
        name = type(self).__name__
        if spatial_type not in ('avg', None):
            raise ValueError(f"{name}: spatial_type must be 'avg' or None, "
                             f'got {spatial_type!r}')
        if not isinstance(text_classifier, dict):
            raise TypeError(f'{name}: text_classifier must be a '
                            'TextClassifier config dict, got '
                            f'{type(text_classifier).__name__}')
        cfg = copy.deepcopy(dict(text_classifier))
        proj_in = cfg.setdefault('in_channels', in_channels)
        if proj_in != in_channels:
            raise ValueError(
                f'{name}: text_classifier.in_channels={proj_in} but the head '
                f'receives in_channels={in_channels} (the backbone width)')
        if cfg.get('background', False):
            raise ValueError(f'{name}: text_classifier.background=True is '
                             'for detection; every video has a class')
        self.text_classifier = MODELS.build(cfg)
        self._check_num_classes()
        self.spatial_type = spatial_type
        self.dropout_ratio = dropout_ratio
        self.dropout = (
            nn.Dropout(p=dropout_ratio) if dropout_ratio > 0 else None)
        self.avg_pool = (
            nn.AdaptiveAvgPool3d((1, 1, 1)) if spatial_type == 'avg' else None)

    def _check_num_classes(self) -> None:
        vocab_size = self.text_classifier.num_classes
        if self.num_classes != vocab_size:
            raise ValueError(
                f'{type(self).__name__}: num_classes={self.num_classes} but '
                f'its text_classifier vocabulary has {vocab_size} classes '
                f'(from {self.text_classifier.vocabulary.source}); set '
                f'num_classes={vocab_size} or give a vocabulary of '
                f'{self.num_classes} classes')

    @property
    def class_names(self) -> List[str]:
        return self.text_classifier.class_names

    def set_vocabulary(self, vocabulary, **kwargs) -> None:
        """Swap the class list (see ``TextClassifier.set_vocabulary``)."""
        self.text_classifier.set_vocabulary(vocabulary, **kwargs)
        self.num_classes = self.text_classifier.num_classes

    def forward(self, x: Union[torch.Tensor, tuple], **kwargs) -> torch.Tensor:
        """Class logits (cosine / tau), shape ``(N, num_classes)``.

        Args:
            x (Tensor | tuple[Tensor]): ``(N, C, T, H, W)`` backbone output
                (the last one of a tuple), or ``(N, C)`` with
                ``spatial_type=None``.
        """
        if isinstance(x, (tuple, list)):
            x = x[-1]
        if self.avg_pool is not None:
            if x.dim() != 5:
                raise ValueError(
                    f'{type(self).__name__}: expected (N, C, T, H, W) '
                    f'features, got shape {tuple(x.shape)}')
            x = self.avg_pool(x)
        if self.dropout is not None:
            x = self.dropout(x)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__}: features have {x.shape[1]} '
                f'channels, in_channels is {self.in_channels}')
        return self.text_classifier(x)

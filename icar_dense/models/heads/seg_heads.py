"""Language-driven decode heads for mmseg.

``ICARUPerHead`` and ``ICARFCNHead`` are mmseg's ``UPerHead`` / ``FCNHead``
with one change: the final pixel classifier ``conv_seg`` (a 1x1 conv with one
output per class) is replaced by the shared :class:`TextClassifier`.  Per
pixel, the decode feature goes through ``Dropout2d`` (mmseg's
``dropout_ratio``), the visual projection (decode channels -> 256), and is
compared by cosine similarity with the class text embeddings, divided by
``tau``.  Everything else (PPM/FPN or the FCN convs, the losses, the
sampler, ``predict_by_feat``, slide inference) is mmseg's code.

Visual projection: ``TextClassifier.init_weights`` loads the iCAR
checkpoint's projection only when it fits, i.e. when the decode channels
equal the backbone width it was trained on (1024 for Swin-B); for UperNet's
512 channels it keeps its fresh initialisation, as iCAR does.

The auxiliary head does not need a second text tower: with
``text_classifier='decode_head'`` it borrows the text bank of the decode
head's classifier (:class:`~icar_dense.models.text.TextBank`, the one way
classifiers share a text side) and owns only its visual projection; its
features are scored by the bank's owner (``TextClassifier.score``: the same
class embeddings and tau).  Two RoBERTa-base copies would cost 125M
parameters, twice the encoding of the prompts and, when the text encoder is
fine-tuned, two diverging text towers of which only one is used at test
time.  The link is made by :class:`ICAREncoderDecoder` after both heads are
built; a bank is not a module, so the encoder appears once in
``state_dict`` / ``parameters`` (under the decode head).

Zero-shot segmentation needs no extra class: ``ICARFCNHead`` with
``num_convs=0`` on the last Swin stage (1024 channels, after the final
LayerNorm) applies iCAR's own projection to every pixel -- the image-level
model projects the average of exactly these features, and the projection is
linear -- and mmseg's ``predict_by_feat`` upsamples the logits bilinearly.
"""
import copy
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads import FCNHead, UPerHead
from mmseg.registry import MODELS

from icar_dense.datasets.seg_ov_ade import resolve_class_names

SHARE_WITH_DECODE_HEAD = 'decode_head'

# Logit given to classes excluded from the loss (unseen classes of an
# open-vocabulary split): far below any cosine / tau (|x| <= 1 / tau), and
# still finite in fp16, so softmax gives them exactly zero probability.
_EXCLUDED_LOGIT = -1e4


class TextSegHeadMixin:
    """Replaces ``conv_seg`` of an mmseg decode head by a text classifier.

    Must be mixed into a ``BaseDecodeHead`` subclass (before it in the
    bases); takes ``text_classifier`` and ``unseen_classes`` and hands the
    other arguments to the mmseg head.
    """

    def __init__(self,
                 text_classifier: Union[dict, str],
                 unseen_classes: Sequence[str] = (),
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        # init_cfg: mmseg's default initialises conv_seg, which is gone
        super().__init__(init_cfg=init_cfg, **kwargs)
        self._init_text_classifier(text_classifier, unseen_classes)

    def _init_text_classifier(self, text_classifier: Union[dict, str],
                              unseen_classes: Sequence[str]) -> None:
        name = type(self).__name__
        if self.out_channels != self.num_classes:
            raise ValueError(
                f'{name}: out_channels={self.out_channels} (sigmoid binary '
                'segmentation) is not supported; the text classifier gives '
                f'one logit per class (num_classes={self.num_classes})')
        # conv_seg is what the text classifier replaces; keeping it would
        # leave unused parameters that DDP complains about
        del self.conv_seg
        if isinstance(unseen_classes, str):
            raise TypeError(f'{name}: unseen_classes must be a list of class '
                            f'names, got the string {unseen_classes!r}')
        self.unseen_classes = list(unseen_classes or [])
        # the decode head's bank, borrowed by share_text_classifier
        self.text_bank = None
        self.visual_proj = None
        if text_classifier == SHARE_WITH_DECODE_HEAD:
            self.text_classifier = None
            return
        if not isinstance(text_classifier, dict):
            raise TypeError(
                f'{name}: text_classifier must be a TextClassifier config '
                f"dict or '{SHARE_WITH_DECODE_HEAD}', got "
                f'{type(text_classifier).__name__}')
        cfg = copy.deepcopy(dict(text_classifier))
        in_channels = cfg.setdefault('in_channels', self.channels)
        if in_channels != self.channels:
            raise ValueError(
                f'{name}: text_classifier.in_channels={in_channels} but the '
                f'decode feature has channels={self.channels}')
        if cfg.get('background', False):
            raise ValueError(
                f'{name}: text_classifier.background=True is for detection; '
                'a segmentation head ignores unlabelled pixels instead '
                '(ignore_index)')
        self.text_classifier = MODELS.build(cfg)
        self._check_num_classes(self.text_classifier)
        resolve_class_names(self.unseen_classes,
                            self.text_classifier.class_names,
                            f'{name} (vocabulary of its text_classifier)')

    # ------------------------------------------------------------------
    # sharing the decode head's text bank
    # ------------------------------------------------------------------
    @property
    def shares_text_classifier(self) -> bool:
        return self.text_classifier is None

    def share_text_classifier(self, classifier: nn.Module) -> None:
        """Borrow ``classifier``'s text bank (class embeddings and tau).

        The bank is a reference, not a module: the encoder stays the
        decode head's.  This head gets its own visual projection
        ``channels -> classifier.embed_dim``.
        """
        name = type(self).__name__
        if not self.shares_text_classifier:
            raise RuntimeError(f'{name} has its own text_classifier; build it '
                               f"with text_classifier='"
                               f"{SHARE_WITH_DECODE_HEAD}' to share one")
        self._check_num_classes(classifier)
        resolve_class_names(self.unseen_classes, classifier.class_names,
                            f'{name} (vocabulary of the decode head)')
        self.text_bank = classifier.bank
        if self.visual_proj is None:
            self.visual_proj = nn.Linear(
                self.channels, classifier.embed_dim, bias=False)

    @property
    def classifier(self) -> nn.Module:
        """The TextClassifier giving the class embeddings."""
        if self.text_classifier is not None:
            return self.text_classifier
        if self.text_bank is None:
            raise RuntimeError(
                f"{type(self).__name__}(text_classifier='"
                f"{SHARE_WITH_DECODE_HEAD}') was never linked to a decode "
                'head: build it inside an ICAREncoderDecoder segmentor (or '
                'call share_text_classifier).')
        return self.text_bank.owner

    # ------------------------------------------------------------------
    # vocabulary
    # ------------------------------------------------------------------
    def _check_num_classes(self, classifier: nn.Module) -> None:
        if classifier.num_classes != self.num_classes:
            raise ValueError(
                f'{type(self).__name__}: num_classes={self.num_classes} but '
                f'the text classifier vocabulary '
                f'({classifier.vocabulary.source}) has '
                f'{classifier.num_classes} classes; set num_classes to the '
                'vocabulary size (tools/test.py --vocabulary does it)')

    @property
    def class_names(self):
        return self.classifier.class_names

    def set_vocabulary(self, vocabulary, **kwargs) -> None:
        """Swap the class list (``TextClassifier.set_vocabulary``)."""
        if self.shares_text_classifier:
            raise RuntimeError(
                f'{type(self).__name__} shares the decode head\'s text '
                'classifier: set the vocabulary of the decode head')
        self.text_classifier.set_vocabulary(vocabulary, **kwargs)
        self.num_classes = self.out_channels = \
            self.text_classifier.num_classes

    # ------------------------------------------------------------------
    # forward and loss
    # ------------------------------------------------------------------
    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        """Per-pixel cosine logits, (N, C, H, W) -> (N, num_classes, H, W)."""
        if self.dropout is not None:
            feat = self.dropout(feat)
        classifier = self.classifier
        if self.text_classifier is not None:
            logits = classifier.forward_dense(feat)
        else:
            x = self._embed_shared(feat.movedim(1, -1))
            logits = classifier.score(x).movedim(-1, 1)
        if logits.shape[1] != self.num_classes:
            # a vocabulary changed behind the head's back
            raise RuntimeError(
                f'{type(self).__name__}: the text classifier gives '
                f'{logits.shape[1]} classes but num_classes is '
                f'{self.num_classes}; change vocabularies with '
                'head.set_vocabulary()')
        return logits

    def pixel_embeddings(self, inputs) -> torch.Tensor:
        """Unit-norm joint-space embeddings of the decode feature.

        What :meth:`cls_seg` compares with the class embeddings, before the
        comparison: ``(N, h, w, embed_dim)``.  Used by the exact large
        vocabulary prediction of ``ICAREncoderDecoder``.
        """
        feat = self._forward_feature(inputs)
        if self.dropout is not None:
            feat = self.dropout(feat)
        x = feat.movedim(1, -1)
        classifier = self.classifier
        if self.text_classifier is not None:
            return classifier.embed_visual(x)
        return self._embed_shared(x)

    def _embed_shared(self, x: torch.Tensor) -> torch.Tensor:
        """This head's projection of ``(..., channels)`` features into the
        borrowed bank's space, L2-normalised (``embed_visual``'s job when
        the head has its own classifier)."""
        return F.normalize(self.visual_proj(x), dim=-1)

    def _unseen_ids(self):
        if not self.unseen_classes:
            return []
        return resolve_class_names(self.unseen_classes, self.class_names,
                                   type(self).__name__)

    def _stack_batch_gt(self, batch_data_samples) -> torch.Tensor:
        seg_label = super()._stack_batch_gt(batch_data_samples)
        unseen = self._unseen_ids()
        if unseen:
            # the dataset should have hidden them already; never train on
            # an unseen class even if it did not
            ids = torch.as_tensor(unseen, device=seg_label.device)
            seg_label = seg_label.masked_fill(
                torch.isin(seg_label, ids), self.ignore_index)
        return seg_label

    def loss_by_feat(self, seg_logits: torch.Tensor,
                     batch_data_samples) -> dict:
        unseen = self._unseen_ids()
        if unseen:
            # inductive training: unseen classes do not even compete in the
            # softmax (no gradient pushes pixels away from their names)
            mask = torch.zeros(
                seg_logits.shape[1], dtype=torch.bool,
                device=seg_logits.device)
            mask[unseen] = True
            seg_logits = seg_logits.masked_fill(
                mask.view(1, -1, 1, 1), _EXCLUDED_LOGIT)
        return super().loss_by_feat(seg_logits, batch_data_samples)


@MODELS.register_module()
class ICARUPerHead(TextSegHeadMixin, UPerHead):
    """UperNet decode head with the iCAR text classifier as pixel classifier.

    Args:
        text_classifier (dict | str): ``TextClassifier`` config
            (``in_channels`` defaults to ``channels``), or
            ``'decode_head'`` to share the decode head's class embeddings.
        unseen_classes (Sequence[str]): Class names excluded from training
            (open-vocabulary split): their pixels are ignored and their
            logits do not take part in the loss. Prediction covers all.
        **kwargs: The arguments of mmseg's ``UPerHead``.
    """


@MODELS.register_module()
class ICARFCNHead(TextSegHeadMixin, FCNHead):
    """FCN head (auxiliary head, or zero-shot head with ``num_convs=0``)
    with the iCAR text classifier as pixel classifier.

    Args:
        text_classifier (dict | str): ``TextClassifier`` config, or
            ``'decode_head'`` (the usual choice for an auxiliary head) to
            share the decode head's class embeddings.
        unseen_classes (Sequence[str]): See :class:`ICARUPerHead`.
        **kwargs: The arguments of mmseg's ``FCNHead``.
    """

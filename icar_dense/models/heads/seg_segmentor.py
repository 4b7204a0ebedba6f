"""mmseg's ``EncoderDecoder`` for the iCAR language heads.

Two additions, nothing else:

* after building the heads, auxiliary heads configured with
  ``text_classifier='decode_head'`` are linked to the decode head's text
  classifier (one text tower for the whole segmentor);
* it reads iCAR checkpoints directly (``load_from``, ``tools/test.py CONFIG
  CKPT``, the demo): an official iCAR file (``model`` with
  ``visual_model.*`` / ``sentence_model.*``) or a ``tools/convert_icar.py``
  output (``backbone.*``, ``text_classifier.*``) is mapped onto
  ``backbone.*`` and ``decode_head.text_classifier.*``
  (:func:`icar_dense.checkpoint.map_icar_to_segmentor`, run by the
  :class:`~icar_dense.checkpoint.ICARCheckpointMixin`).  That is what the
  zero-shot config tests with: no fine-tuned segmentation checkpoint exists.
  A visual projection of the wrong width (UperNet's 512 channels) is left out
  with a message, as ``TextClassifier.init_weights`` does.

And one faster path, with the same results: for vocabularies of
``large_vocab['min_classes']`` classes or more, ``predict`` computes the
per-pixel argmax with :func:`~icar_dense.models.heads.large_vocab.dense_argmax`
instead of materialising mmseg's ``C x H x W`` logits (1.3 GB at 1203
classes and 512 x 512, 23 GB at 21,841).  The results then hold
``pred_sem_seg`` only, no ``seg_logits``: test-time augmentation (which
averages ``seg_logits``) needs ``large_vocab=None``, which ``tools/test.py
--tta`` sets; the text pass of ``InMaPTestLoop`` uses the dense path too.
"""
from typing import List, Optional

import torch
import torch.nn as nn
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from icar_dense.checkpoint import ICARCheckpointMixin, map_icar_to_segmentor
from .large_vocab import chain_matrices, dense_argmax, window_grid
from .seg_heads import TextSegHeadMixin


@MODELS.register_module()
class ICAREncoderDecoder(ICARCheckpointMixin, EncoderDecoder):
    """``EncoderDecoder`` with a shared text classifier and iCAR loading.

    Args:
        large_vocab (dict, optional): The exact large-vocabulary prediction
            (see the module docstring): ``min_classes`` (use it from this
            many classes on; default 1000), ``topk`` (screening candidates
            per position; 8), ``bf16_min_classes`` (screen in bfloat16 from
            this many classes on; 4096), ``bf16_topk`` (candidates with
            bfloat16 screening, whose bound is looser; 16), ``tile`` (output
            tile; 64).  None always uses mmseg's dense path.
        *args, **kwargs: Those of mmseg's ``EncoderDecoder``.
    """

    # official / converted iCAR files handed to the loader
    icar_checkpoint_filter = map_icar_to_segmentor

    LARGE_VOCAB_DEFAULTS = dict(
        min_classes=1000, topk=8, bf16_min_classes=4096, bf16_topk=16,
        tile=64)

    def __init__(self, *args, large_vocab: Optional[dict] = {}, **kwargs):
        super().__init__(*args, **kwargs)
        self._link_auxiliary_heads()
        if large_vocab is not None:
            unknown = set(large_vocab) - set(self.LARGE_VOCAB_DEFAULTS)
            if unknown:
                raise KeyError(
                    f'{type(self).__name__}: unknown large_vocab keys '
                    f'{sorted(unknown)}; allowed: '
                    f'{sorted(self.LARGE_VOCAB_DEFAULTS)}')
            large_vocab = {**self.LARGE_VOCAB_DEFAULTS, **large_vocab}
        self.large_vocab = large_vocab
        # statistics of the last large-vocabulary prediction (benchmarks)
        self.large_vocab_stats: List[dict] = []

    def _aux_heads(self):
        if not self.with_auxiliary_head:
            return []
        if isinstance(self.auxiliary_head, nn.ModuleList):
            return list(self.auxiliary_head)
        return [self.auxiliary_head]

    def _link_auxiliary_heads(self) -> None:
        for head in self._aux_heads():
            if not (isinstance(head, TextSegHeadMixin)
                    and head.shares_text_classifier):
                continue
            own = getattr(self.decode_head, 'text_classifier', None)
            if own is None:
                raise TypeError(
                    f"{type(head).__name__}(text_classifier='decode_head') "
                    f'needs a decode head with its own text_classifier; the '
                    f'decode head is {type(self.decode_head).__name__}')
            head.share_text_classifier(own)
        if (isinstance(self.decode_head, TextSegHeadMixin)
                and self.decode_head.shares_text_classifier):
            raise TypeError(
                f"{type(self.decode_head).__name__}: text_classifier="
                "'decode_head' is for auxiliary heads; the decode head needs "
                'a TextClassifier config')

    @property
    def class_names(self):
        return self.decode_head.class_names

    def set_vocabulary(self, vocabulary, **kwargs) -> None:
        """Swap the class list of every text classifier of the segmentor."""
        self.decode_head.set_vocabulary(vocabulary, **kwargs)
        self.num_classes = self.out_channels = self.decode_head.num_classes
        for head in self._aux_heads():
            if not isinstance(head, TextSegHeadMixin):
                continue
            if head.shares_text_classifier:
                head.num_classes = head.out_channels = self.num_classes
            else:
                head.set_vocabulary(vocabulary, **kwargs)

    # ------------------------------------------------------------------
    # exact large-vocabulary prediction
    # ------------------------------------------------------------------
    def uses_large_vocab_path(self) -> bool:
        """Whether :meth:`predict` takes the large-vocabulary path."""
        return (self.large_vocab is not None
                and isinstance(self.decode_head, TextSegHeadMixin)
                and self.decode_head.num_classes >=
                self.large_vocab['min_classes'])

    def predict(self, inputs, data_samples=None):
        if not self.uses_large_vocab_path():
            return super().predict(inputs, data_samples)
        self.large_vocab_stats = []
        only_prediction = data_samples is None
        if only_prediction:
            shape = tuple(inputs.shape[2:])
            data_samples = [
                SegDataSample(
                    metainfo=dict(
                        img_shape=shape,
                        ori_shape=shape,
                        pad_shape=shape,
                        padding_size=[0, 0, 0, 0]))
                for _ in range(inputs.shape[0])
            ]
        for i, sample in enumerate(data_samples):
            pred = self._large_vocab_argmax(inputs[i:i + 1], sample.metainfo,
                                            not only_prediction)
            sample.set_data(
                {'pred_sem_seg': PixelData(**{'data': pred[None]})})
        return data_samples

    def _large_vocab_argmax(self, inputs, meta: dict,
                            postprocess: bool) -> torch.Tensor:
        """mmseg's ``inference`` + ``postprocess_result`` argmax of one
        image, through :func:`dense_argmax`."""
        cfg = self.large_vocab
        height, width = inputs.shape[2:]
        if self.test_cfg.get('mode', 'whole') == 'slide':
            row_spans, col_spans = window_grid((height, width),
                                               self.test_cfg.crop_size,
                                               self.test_cfg.stride)
            full = (height, width)
            crops = True
        else:
            # EncoderDecoder.whole_inference -> predict_by_feat's size
            img_shape = meta['img_shape']
            size = (meta['pad_shape'][:2] if 'pad_shape' in meta
                    and not isinstance(img_shape, torch.Size) else img_shape)
            full = tuple(int(v) for v in size)
            row_spans, col_spans = [(0, full[0])], [(0, full[1])]
            crops = False
        head = self.decode_head
        bands = {}
        for r, (y1, y2) in enumerate(row_spans):
            for c, (x1, x2) in enumerate(col_spans):
                image = inputs[:, :, y1:y2, x1:x2] if crops else inputs
                feats = self.extract_feat(image)
                bands[r, c] = head.pixel_embeddings(feats)[0]
        low_h = [bands[r, 0].shape[0] for r in range(len(row_spans))]
        low_w = [bands[0, c].shape[1] for c in range(len(col_spans))]
        embeds = torch.cat([
            torch.cat([bands[r, c] for c in range(len(col_spans))], 1)
            for r in range(len(row_spans))
        ], 0)
        if postprocess:
            pad = meta.get('img_padding_size',
                           meta.get('padding_size', [0] * 4))
            left, right, top, bottom = (int(v) for v in pad)
            flip = meta.get('flip', None)
            direction = meta.get('flip_direction', None)
            ori = meta['ori_shape']
            rows = chain_matrices(low_h, row_spans, full[0],
                                  head.align_corners, (top, bottom),
                                  bool(flip) and direction == 'vertical',
                                  int(ori[0]), self.align_corners)
            cols = chain_matrices(low_w, col_spans, full[1],
                                  head.align_corners, (left, right),
                                  bool(flip) and direction == 'horizontal',
                                  int(ori[1]), self.align_corners)
        else:
            rows = chain_matrices(low_h, row_spans, full[0],
                                  head.align_corners, (0, 0), False, None,
                                  self.align_corners)
            cols = chain_matrices(low_w, col_spans, full[1],
                                  head.align_corners, (0, 0), False, None,
                                  self.align_corners)
        classifier = head.classifier
        class_embeds = classifier.all_class_embeddings().float()
        stats = {}
        use_bf16 = class_embeds.shape[0] >= cfg['bf16_min_classes']
        pred = dense_argmax(
            embeds.float(),
            class_embeds,
            float(classifier.scale()),
            rows.to(embeds.device),
            cols.to(embeds.device),
            k=cfg['bf16_topk'] if use_bf16 else cfg['topk'],
            use_bf16=use_bf16,
            tile=cfg['tile'],
            stats=stats)
        self.large_vocab_stats.append(stats)
        return pred

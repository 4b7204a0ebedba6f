"""mmseg's ``EncoderDecoder`` for the iCAR language heads.

Two additions, nothing else:

* after building the heads, auxiliary heads configured with
  ``text_classifier='decode_head'`` are linked to the decode head's text
  classifier (one text tower for the whole segmentor);
* it reads iCAR checkpoints directly (``load_from``, ``tools/test.py CONFIG
  CKPT``, the demo): an official iCAR file (``model`` with
  ``visual_model.*`` / ``sentence_model.*``) or a ``tools/convert_icar.py``
  output (``backbone.*``, ``text_classifier.*``) is mapped onto
  ``backbone.*`` and ``decode_head.text_classifier.*``.  That is what the
  zero-shot config tests with: no fine-tuned segmentation checkpoint exists.
  A visual projection of the wrong width (UperNet's 512 channels) is left out
  with a message, as ``TextClassifier.init_weights`` does.
"""
from collections import OrderedDict

import torch.nn as nn
from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from icar_dense.utils.checkpoint import (LEGACY_TEXT_KEYS,
                                         convert_icar_state_dict,
                                         detect_layout, find_icar_state_dict)
from .seg_heads import TextSegHeadMixin


@MODELS.register_module()
class ICAREncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` with a shared text classifier and iCAR loading.

    Args: those of mmseg's ``EncoderDecoder``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._link_auxiliary_heads()

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
    # reading iCAR checkpoints
    # ------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._map_icar_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _map_icar_checkpoint(self, state_dict, prefix: str) -> None:
        """Rewrite an iCAR-layout state dict in place into ours."""
        official, consumed = find_icar_state_dict(state_dict, prefix)
        rel = OrderedDict((k[len(prefix):], k) for k in state_dict
                          if k.startswith(prefix))
        if official is not None:
            detect_layout(official, 'iCAR checkpoint')
            converted, unknown = convert_icar_state_dict(
                official, 'iCAR checkpoint')
            for key in consumed:
                state_dict.pop(key)
            layout = 'official iCAR'
        elif any(r.startswith('text_classifier.') for r in rel):
            # tools/convert_icar.py output
            converted = OrderedDict(
                (r, state_dict.pop(k)) for r, k in rel.items()
                if r.startswith(('text_classifier.', 'backbone.')))
            unknown = []
            layout = 'converted iCAR'
        else:
            return
        notes = []
        own = getattr(self.decode_head, 'text_classifier', None)
        own_state = own.state_dict() if own is not None else {}
        for key, value in converted.items():
            if not key.startswith('text_classifier.'):
                state_dict[prefix + key] = value
                continue
            sub = key[len('text_classifier.'):]
            if own is None or sub.startswith(LEGACY_TEXT_KEYS):
                continue
            if sub in own_state and own_state[sub].shape != value.shape:
                notes.append(f'{key} {tuple(value.shape)} does not fit '
                             f'{tuple(own_state[sub].shape)}: kept the '
                             'initialisation')
                continue
            state_dict[prefix + 'decode_head.' + key] = value
        if own is None:
            notes.append('the decode head has no text_classifier: text '
                         'weights ignored')
        if unknown:
            notes.append(f'unrecognised keys {unknown[:5]}')
        print_log(
            f'{type(self).__name__}: reading a checkpoint in the {layout} '
            f'layout{"; " + "; ".join(notes) if notes else ""}',
            logger='current')

"""mmaction2's ``Recognizer3D`` that reads official iCAR checkpoints.

Two additions to ``Recognizer3D``, nothing else:

* ``set_vocabulary`` / ``class_names`` swap the class list of the head's
  text classifier (used by the multi-split zero-shot test loop);
* any state dict loaded into the model (``load_from``, ``tools/test.py
  CONFIG CKPT``, ``tools/demo.py``, mmaction's ``init_recognizer``) may be an
  **official iCAR image checkpoint** (``{'model': {visual_model.*,
  sentence_model.*}}``): its Swin is inflated to the video backbone (by the
  backbone's ``inflate_state_dict``, i.e. mmaction's inflation) and its text
  tower and visual projection go to ``cls_head.text_classifier``.  That is
  how a zero-shot video config is tested before any video training.
"""
import logging

from mmaction.models.recognizers import Recognizer3D
from mmaction.registry import MODELS
from mmengine.logging import print_log

from icar_dense.models.text import convert_icar_text_classifier
from icar_dense.utils.checkpoint import (ICAR_VISUAL_BACKBONE,
                                         CheckpointError,
                                         find_icar_state_dict,
                                         log_rebuilt_unused,
                                         split_icar_state_dict)


@MODELS.register_module()
class ICARRecognizer3D(Recognizer3D):
    """``Recognizer3D`` with vocabulary swapping and iCAR checkpoint reading.

    Args: those of mmaction2's ``Recognizer3D``.
    """

    @property
    def class_names(self):
        return self.cls_head.class_names

    def set_vocabulary(self, vocabulary, **kwargs) -> None:
        """Swap the class list of the head's text classifier."""
        if not hasattr(self.cls_head, 'set_vocabulary'):
            raise TypeError(
                f'{type(self).__name__}: the head '
                f'{type(self.cls_head).__name__} has no text classifier, so '
                'its classes are fixed by training')
        self.cls_head.set_vocabulary(vocabulary, **kwargs)

    # ------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._map_icar_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _map_icar_checkpoint(self, state_dict, prefix: str) -> None:
        """Rewrite an official iCAR state dict in place into ours."""
        official, consumed = find_icar_state_dict(state_dict, prefix)
        if official is None:
            if any(k.startswith(prefix + 'backbone.stages.')
                   for k in state_dict):
                raise CheckpointError(
                    f'{type(self).__name__}: this checkpoint holds a 2D '
                    'OpenMMLab Swin (backbone.stages.*), e.g. the output of '
                    'tools/convert_icar.py; the video backbone reads the '
                    'official iCAR file (or an original Swin checkpoint) '
                    'directly: pass that file instead')
            return
        for key in consumed:
            state_dict.pop(key)
        parts = split_icar_state_dict(official, 'iCAR checkpoint')
        rebuilt = list(parts['rebuilt'])
        notes = []
        if parts['swin']:
            inflated = self.backbone.inflate_state_dict(parts['swin'])
            for key, value in inflated.items():
                state_dict[prefix + 'backbone.' + key] = value
            # e.g. pos_embed: no place for it in the video backbone
            rebuilt += [ICAR_VISUAL_BACKBONE + k for k in parts['swin']
                        if k not in inflated and k not in ('norm.weight',
                                                           'norm.bias')]
        classifier = getattr(self.cls_head, 'text_classifier', None)
        if classifier is None:
            notes.append(f'the head {type(self.cls_head).__name__} has no '
                         'text_classifier: text weights ignored')
        else:
            text, fit_notes = classifier.fit_checkpoint_weights(
                convert_icar_text_classifier(official), rebuilt)
            notes += fit_notes
            for key, value in text.items():
                state_dict[prefix + 'cls_head.text_classifier.' + key] = value
        if parts['unexpected']:
            notes.append(f"unrecognised keys {parts['unexpected'][:5]}")
        print_log(
            f'{type(self).__name__}: reading an official iCAR checkpoint '
            '(Swin inflated to the video backbone, text tower and visual '
            'projection to cls_head.text_classifier)'
            f'{"; " + "; ".join(notes) if notes else ""}',
            logger='current')
        # what is not loaded: the Swin buffers (rebuilt for the 3D window),
        # pos_embed, RoBERTa's position_ids / pooler; anything else that
        # did not find a place stays "unrecognised"
        rest = log_rebuilt_unused(
            f'{type(self).__name__} (official iCAR checkpoint)', rebuilt)
        if rest:
            print_log(
                f'{type(self).__name__}: 2D weights with no place in the '
                f'video backbone: {rest[:8]}',
                logger='current', level=logging.WARNING)

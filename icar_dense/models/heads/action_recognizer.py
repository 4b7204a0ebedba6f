"""mmaction2's ``Recognizer3D`` that reads official iCAR checkpoints.

Two additions to ``Recognizer3D``, nothing else:

* ``set_vocabulary`` / ``class_names`` swap the class list of the head's
  text classifier (used by the multi-split zero-shot test loop);
* any state dict loaded into the model (``load_from``, ``tools/test.py
  CONFIG CKPT``, ``tools/demo.py``, mmaction's ``init_recognizer``) may be an
  **official iCAR image checkpoint** (``{'model': {visual_model.*,
  sentence_model.*}}``): its Swin is inflated to the video backbone
  (:func:`icar_dense.checkpoint.inflate_state_dict`, mmaction's
  inflation) and its text tower and visual projection go to
  ``cls_head.text_classifier`` (:func:`icar_dense.checkpoint.
  map_icar_to_recognizer`, run by the :class:`~icar_dense.checkpoint.
  ICARCheckpointMixin`).  That is how a zero-shot video config is tested
  before any video training.
"""
from mmaction.models.recognizers import Recognizer3D
from mmaction.registry import MODELS

from icar_dense.checkpoint import ICARCheckpointMixin, map_icar_to_recognizer


@MODELS.register_module()
class ICARRecognizer3D(ICARCheckpointMixin, Recognizer3D):
    """``Recognizer3D`` with vocabulary swapping and iCAR checkpoint reading.

    Args: those of mmaction2's ``Recognizer3D``.
    """

    # official iCAR files handed to the loader
    icar_checkpoint_filter = map_icar_to_recognizer

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

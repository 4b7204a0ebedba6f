from .seg_heads import ICARFCNHead, ICARUPerHead, TextSegHeadMixin  # noqa: F401
from .seg_segmentor import ICAREncoderDecoder  # noqa: F401
from .action_heads import ICARVideoHead  # noqa: F401,E402
from .action_recognizer import ICARRecognizer3D  # noqa: F401,E402

from .action_heads import ICARVideoHead  # noqa: F401,E402
from .action_recognizer import ICARRecognizer3D  # noqa: F401,E402

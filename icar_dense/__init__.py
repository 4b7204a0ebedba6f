"""icar_dense: iCAR / InMaP vision-language backbones for dense prediction."""
from . import compat

compat.apply()

from .version import __version__  # noqa: E402
from . import datasets, engine, evaluation, inmap, models  # noqa: E402,F401

# atomic checkpoints, safe loaders, registry suggestions (mmengine)
engine.safety.apply()
# one summary line instead of a warning per frozen text-encoder tensor
engine.optim_logging.apply()

__all__ = ['__version__', 'compat']

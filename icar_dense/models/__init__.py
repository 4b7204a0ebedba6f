from . import backbones, heads, text  # noqa: F401

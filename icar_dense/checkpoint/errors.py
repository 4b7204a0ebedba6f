"""The error every checkpoint function raises, and message clean-up.

Kept apart so that every module of :mod:`icar_dense.checkpoint` can raise
it without importing another (no import cycles inside the package).
"""
import re

_ANSI = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with what to do about it."""


def strip_ansi(text):
    """``text`` without terminal escape codes (torch colours its errors)."""
    return _ANSI.sub('', str(text))

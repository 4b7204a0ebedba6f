"""Moved to :mod:`icar_dense.checkpoint` (issue 17); kept so that existing
imports (``from icar_dense.utils.checkpoint import ...``) keep working.

New code imports from :mod:`icar_dense.checkpoint`.
"""
from icar_dense.checkpoint import *  # noqa: F401,F403
from icar_dense.checkpoint import __all__  # noqa: F401

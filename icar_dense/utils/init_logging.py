"""Quiet ``init_weights`` for the command-line tools."""
import contextlib


@contextlib.contextmanager
def quiet_init_weights():
    """Skip mmengine's per-parameter initialisation report.

    ``BaseModule.init_weights`` of a top-level module logs one notice per
    parameter (``The value is the same before and after calling
    `init_weights` ...``: about 150 lines for a Swin backbone or a text
    tower) when no log file is open -- the case of a tool that builds a model
    outside a Runner.  mmdet's and mmseg's inferencers never call
    ``init_weights`` (they load a checkpoint), so they print none; the
    tools that need ``init_weights`` (to load ``init_cfg`` weights) skip the
    report the same way.  Messages of the initialisation itself (which
    checkpoint was loaded, missing keys) are kept.
    """
    from mmengine.model import BaseModule
    original = BaseModule.__dict__['_dump_init_info']

    def _dump_init_info(self, *args, **kwargs):
        return None

    BaseModule._dump_init_info = _dump_init_info
    try:
        yield
    finally:
        BaseModule._dump_init_info = original

"""``atomic_local``: mmengine's local file backend with crash-safe writes.

mmengine 0.10.7's ``LocalBackend.put`` / ``put_text`` open the target file
and write into it: a process killed meanwhile leaves a truncated checkpoint
under its final name.  :class:`AtomicLocalBackend` writes through
:func:`icar_dense.checkpoint.atomic_write` instead (temporary file, fsync,
rename), so a file at its final name is always complete.

It is registered under a new name, so nothing of mmengine changes: a
``CheckpointHook`` or ``Runner.save_checkpoint`` uses it when given
``backend_args=dict(backend='atomic_local')``, which
:class:`~icar_dense.engine.hooks.SafeCheckpointHook` and
:class:`~icar_dense.engine.runner.ICARRunner` do for local folders.
"""
from typing import Optional

from mmengine.fileio import LocalBackend, register_backend

from icar_dense.checkpoint.io import atomic_write

ATOMIC_BACKEND = 'atomic_local'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes leave the old or the complete file."""

    def put(self, obj: bytes, filepath) -> None:
        """Write bytes to ``filepath`` atomically (temporary file + rename)."""
        atomic_write(bytes(obj), str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically (temporary file + rename)."""
        atomic_write(obj.encode(encoding), str(filepath))


def atomic_backend_args(uri, backend_args: Optional[dict] = None,
                        file_client_args: Optional[dict] = None):
    """``backend_args`` selecting :class:`AtomicLocalBackend` for ``uri``.

    Only when the caller chose no backend and ``uri`` is a local path;
    otherwise ``backend_args`` unchanged (``s3://`` etc. keep theirs).
    """
    if backend_args is not None or file_client_args is not None:
        return backend_args
    if uri is not None and '://' in str(uri):  # s3://, petrel://, ...
        return backend_args
    return dict(backend=ATOMIC_BACKEND)


__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_backend_args']

"""One training run per work dir.

``tools/train.py`` calls :func:`hold_work_dir` before the runner is built:
the lock is an exclusive POSIX record lock (``fcntl.lockf``) on
``WORK_DIR/.train.lock``, taken on a file that stays open for the life of
the process.  The kernel releases it when the process ends, however it ends
(SIGKILL, OOM kill), so a dead run never leaves the work dir locked.  Unlike
``flock``, a POSIX lock is not inherited by forked children, so dataloader
workers that outlive a killed run for a few seconds do not hold it either.
The file also records the holder (pid, host, start time, command line), so a
refused run names it.  (A POSIX lock is dropped when its process closes *any*
descriptor of the file: nothing but this module opens it.)

Where locking is not supported (some network file systems), the recorded
holder is trusted instead while its pid runs on the same host; a record of
another host is trusted for :data:`FOREIGN_HOLDER_TTL` seconds after its last
refresh (the holding run refreshes it every :data:`REFRESH_S` seconds).

``tools/test.py`` does not take the lock: mmengine writes its logs into a
timestamped folder of the work dir, and ``SaveMetricsHook`` keeps a copy of
the metrics there too, so two tests, or a test beside a training run, do not
overwrite each other's results.
"""
import errno
import json
import os
import os.path as osp
import socket
import sys
import threading
import time
from typing import Optional

LOCK_NAME = '.train.lock'
REFRESH_S = 60.0
FOREIGN_HOLDER_TTL = 10 * REFRESH_S

_held = {}  # abs work dir -> WorkDirLock held by this process


class WorkDirBusyError(RuntimeError):
    """Another run is training in the work dir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _describe(holder: dict) -> str:
    if not holder:
        return 'a process that left no record'
    started = holder.get('started')
    when = (time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))
            if isinstance(started, (int, float)) else 'an unknown time')
    text = (f"pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {when}")
    if holder.get('command'):
        text += f": {holder['command']}"
    return text


class WorkDirLock:
    """An exclusive lock of a work dir, released when the process ends.

    Args:
        work_dir (str): The folder to lock (created if missing).
    """

    def __init__(self, work_dir: str):
        self.work_dir = osp.abspath(work_dir)
        self.path = osp.join(self.work_dir, LOCK_NAME)
        self.fd: Optional[int] = None
        self.uses_lock = True
        self._stop = threading.Event()

    # -- the record -----------------------------------------------------
    def _record(self) -> dict:
        return dict(pid=os.getpid(), host=socket.gethostname(),
                    started=time.time(), refreshed=time.time(),
                    command=' '.join([osp.basename(sys.executable)] +
                                     sys.argv))

    def read_holder(self) -> dict:
        try:
            with open(self.path, encoding='utf-8') as f:
                return json.loads(f.read() or '{}')
        except (OSError, ValueError):
            return {}

    def _write_record(self, record: dict) -> None:
        data = json.dumps(record).encode('utf-8')
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def _busy(self, holder: dict) -> WorkDirBusyError:
        return WorkDirBusyError(
            f'work dir {self.work_dir} is in use by another training run '
            f'({_describe(holder)}; lock file {self.path}). Two runs in one '
            'work dir overwrite each other\'s checkpoints, last_checkpoint '
            'and metrics: wait for that run to end, stop it, or pass another '
            '--work-dir (a run that was killed holds no lock; --resume a '
            'finished or killed run once it has ended)')

    # -- acquire / release -----------------------------------------------
    def acquire(self) -> 'WorkDirLock':
        os.makedirs(self.work_dir, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          0o644)
        try:
            self._lock_fd()
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise
        self._write_record(self._record())
        if not self.uses_lock:
            threading.Thread(target=self._refresh, daemon=True,
                             name='work-dir-lock').start()
        return self

    def _lock_fd(self) -> None:
        import fcntl
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EAGAIN):
                raise self._busy(self.read_holder()) from None
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP,
                                 errno.ENOSYS, errno.EINVAL):
                raise
        # no locks on this file system: trust a live holder's record
        self.uses_lock = False
        holder = self.read_holder()
        if self._holder_alive(holder):
            raise self._busy(holder)

    @staticmethod
    def _holder_alive(holder: dict) -> bool:
        pid = holder.get('pid')
        if not isinstance(pid, int) or pid == os.getpid():
            return False
        if holder.get('host') == socket.gethostname():
            return _pid_alive(pid)
        refreshed = holder.get('refreshed') or 0
        return time.time() - refreshed < FOREIGN_HOLDER_TTL

    def _refresh(self) -> None:
        record = self._record()
        while not self._stop.wait(REFRESH_S):
            record['refreshed'] = time.time()
            try:
                self._write_record(record)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # no holder any more
            except OSError:
                pass
            os.close(self.fd)  # releases the lock
            self.fd = None
        _held.pop(self.work_dir, None)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def hold_work_dir(work_dir: str) -> Optional[WorkDirLock]:
    """Lock ``work_dir`` for this process until it ends.

    Only the first process of a distributed job (``RANK``/``LOCAL_RANK`` 0 or
    unset) takes the lock; the other ranks write through it.

    Raises:
        WorkDirBusyError: Another live process holds the lock; the message
            names the work dir and the holder (pid, host, start time).
    """
    rank = os.environ.get('RANK', os.environ.get('LOCAL_RANK', '0'))
    if rank not in ('', '0'):
        return None
    key = osp.abspath(work_dir)
    if key in _held:
        return _held[key]
    lock = WorkDirLock(work_dir).acquire()
    _held[key] = lock
    return lock

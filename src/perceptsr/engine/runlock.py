"""One writer per run directory: an advisory lock (`flock`) on `RUN/.lock`, held for the life of a training run.

`flock` is released by the kernel when its holder dies, however it dies (SIGKILL included), so a lock can never
be left behind by a crash: a second `train -o RUN` or a `--resume RUN` of a live run is refused in one line,
and a run whose process is gone can always be taken over. The file itself is never deleted (deleting a lock
file races with a process about to lock it); it holds the holder's pid, for the message.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from perceptsr.errors import InputError

log = logging.getLogger(__name__)

LOCK = ".lock"


class RunLock:
    """An exclusive, non-blocking lock on one run directory; `acquire` is idempotent, `release` too."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        """Create the run directory if needed and lock it, or raise InputError if another process holds it."""
        if self.fd is not None:
            return
        path = self.run_dir / LOCK
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise InputError(f"cannot lock run directory {self.run_dir}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise InputError(f"run directory {self.run_dir} is in use by {who} (a training run is writing "
                                 f"it); wait for it to end or stop it first") from None
            # a file system without flock (some network mounts): go on unprotected rather than refuse to train
            log.warning("cannot lock %s (%s); two runs writing it at once would mix their results",
                        self.run_dir, error.strerror or error)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is for messages only
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None

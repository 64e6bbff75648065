"""One run per output folder: an exclusive lock on run.out/.rdfer.lock, held for the run's life.

flock, not a marker file: the operating system drops the lock when the process ends however it ends (a killed
run never blocks the next one), and two runs started at the same instant cannot both get it. The file holds
the holder's pid and host, so that a refused run can say who has the folder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from rdfer.errors import ConfigError

LOCK_NAME = ".rdfer.lock"


class OutLock:
    def __init__(self, fd: int | None):
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # explicit: forked loader workers share the descriptor
            os.close(self._fd)
            self._fd = None


def hold(out: Path) -> OutLock:
    """The lock of run.out, or a ConfigError naming the process that holds it."""
    path = Path(out) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process that has not said"
        os.close(fd)
        raise ConfigError(
            f"run.out {out} is in use by another run ({holder}): wait for it to end, or choose another --out"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    return OutLock(fd)

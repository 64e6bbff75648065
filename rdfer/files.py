"""Writing a file whole or not at all: the bytes go to `.NAME.PID.tmp` beside it, reach the disk, then replace
it in one rename, so a process killed while writing leaves the previous file whole. A disk without room is an
error naming the file and the space it needs. `remove_temporaries` clears what a killed writer left."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from rdfer.errors import RdferError


# Test hook: called in the writing thread as (path, stage), stage "written" (the temporary file is whole,
# not yet renamed) or "replaced"; a test holds a write there, or sends a signal at that moment.
def on_write(path: Path, stage: str) -> None:
    del path, stage  # nothing happens here outside the tests


_TEMPORARY = re.compile(r"\.(.+)\.\d+\.tmp")


class DiskFullError(RdferError):
    """No room on the disk for a file; the previous version of it is intact."""


def gb_or_mb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _disk_full(path: Path, size: int) -> DiskFullError:
    free = free_bytes(path.parent)
    return DiskFullError(
        f"{path}: no room on the disk: writing it needs {gb_or_mb(size)}, {gb_or_mb(free)} is free in "
        f"{path.parent}; free some space or choose another --out (an earlier {path.name} is intact)"
    )


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if free_bytes(path.parent) < len(data):
        raise _disk_full(path, len(data))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        on_write(path, "written")
        os.replace(tmp, path)
        on_write(path, "replaced")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, len(data)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that writers of `names` in `folder` left (a killed process's); call it
    only where no other process writes into `folder` (rdfer.run_lock). Returns what was deleted."""
    gone = []
    for p in Path(folder).glob(".*.tmp"):
        m = _TEMPORARY.fullmatch(p.name)
        if m and m.group(1) in names:
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone

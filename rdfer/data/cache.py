"""The frame cache's store: every clip decoded once into uint8 frames at the training size, kept on disk and
reused by every later epoch, fold and run (rdfer.data.cached_loader reads batches from it).

One folder per key (dataset, root, T, frame selection, image size, decoder) under the frame cache folder
($RDFER_FRAME_CACHE, else $RDFER_CACHE/frames, else ~/.cache/rdfer/frames):
    frames.u8    the rows back to back, uint8 [rows, T, 3, size, size] (read as a memmap)
    index.json   the key, the committed row count, and per clip (its path relative to the root) its row and
                 the mtime of its folder or video file when it was decoded
    lock         serialises fillers (concurrent runs, or the ranks of one torchrun job)
The root is the deepest folder holding every clip of the split, so both splits of every DFEW fold share one
store: fold 2 finds fold 1's clips decoded and decodes only the clips that are new. The decoder is part of the
key because DALI's nvJPEG and the CPU loader's PIL differ by a few levels: one store, one decoder's pixels
(except the clips of a DALI batch that failed on a corrupt frame: the CPU twin reads that batch).
A clip whose mtime changed is decoded again into a new row (the old one stays unused: delete the folder to
reclaim it). A frame rewritten in place leaves its folder's mtime alone: delete the store after that.

Atomic: rows are written past the last committed row and flushed to disk before index.json is replaced (temp
file + rename) to name them; rows that a killed fill wrote are named by no index and are written over by the
next fill. A fill commits every few seconds, so an interrupted long fill keeps what it decoded.

Bad clips are never stored: a clip that fails to decode is tried again by each run that needs it, and its
DataError message is what the loader raises or, with skip_bad, reports: exactly the CPU loader's behaviour.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rdfer import environment
from rdfer.data.records import Split
from rdfer.progress import progress_bar

FORMAT = 1
DISK_MARGIN = 2**30  # bytes a fill leaves free on the store's disk
_COMMIT_SECONDS = 10.0


class CacheSpaceError(OSError):
    """The store's disk lacks the space to decode a split into it."""


@dataclass(frozen=True)
class StoreKey:
    dataset: str
    root: str  # resolved
    num_frames: int
    image_size: int
    decoder: str  # pil (rdfer.data.loader) | dali-cpu | dali-gpu
    selection: str = "uniform"  # sampling.uniform_indices

    @property
    def row_shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, 3, self.image_size, self.image_size)

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape)

    def folder(self) -> Path:
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()
        name = f"{self.dataset}-T{self.num_frames}-{self.image_size}px-{self.decoder}-{digest[:16]}"
        return environment.frame_cache_dir() / name


def split_root(split: Split) -> Path:
    """The deepest folder that holds every clip of `split`, resolved."""
    return Path(os.path.commonpath([os.path.abspath(Path(r.path).parent) for r in split.records])).resolve()


def gb_text(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None  # never fresh: the decoder reports what is wrong with it


@dataclass
class StoreView:
    """A split as the store holds it: per split position its row (-1 for a bad clip) and the bad clips'
    DataError messages, by position."""

    folder: Path
    key: StoreKey
    committed: int  # rows the index named when the view was taken; later fills only add rows after them
    rows: np.ndarray  # int64 [len(split)]
    problems: dict[int, str]

    def memmap(self) -> np.ndarray:
        shape = (self.committed, *self.key.row_shape)
        if not self.committed:
            return np.zeros(shape, np.uint8)
        return np.memmap(self.folder / "frames.u8", dtype=np.uint8, mode="r", shape=shape)


def _read_index(folder: Path, key: StoreKey) -> dict:
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if index.get("format") != FORMAT or index.get("key") != dataclasses.asdict(key):
        return {"format": FORMAT, "key": dataclasses.asdict(key), "rows": 0, "clips": {}}  # a new store
    return index


def _write_index(folder: Path, index: dict) -> None:
    tmp = folder / f"index.json.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "index.json")


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: one filler at a time is the user's to ensure
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _fill(
    folder: Path,
    index: dict,
    key: StoreKey,
    todo: dict[str, tuple[Path, int | None]],
    decode: Callable[[list[Path]], Iterator],
    progress: bool,
) -> dict[str, str]:
    """Decode the clips `todo` {name: (path, mtime)} into new rows, committing as it goes; returns the
    DataError messages of the clips that failed, by name."""
    problems, pending, last = {}, {}, time.monotonic()
    fd = os.open(folder / "frames.u8", os.O_RDWR | os.O_CREAT, 0o644)

    def commit() -> None:
        os.fsync(fd)
        index["clips"].update(pending)
        index["rows"] += len(pending)
        _write_index(folder, index)
        pending.clear()

    try:
        bar = progress_bar(
            decode([p for p, _ in todo.values()]),
            total=len(todo),
            enabled=progress,
            leave=False,
            desc=f"frame cache: decoding {len(todo)} clips into {folder.name}",
        )
        for (name, (_, stamp)), out in zip(todo.items(), bar, strict=True):
            if isinstance(out, str):
                problems[name] = out
                continue
            frames = np.ascontiguousarray(out.numpy() if torch.is_tensor(out) else out)
            if frames.shape != key.row_shape or frames.dtype != np.uint8:
                raise RuntimeError(
                    f"{todo[name][0]}: the decoder gave {frames.dtype} {frames.shape}, "
                    f"expected uint8 {key.row_shape}"
                )
            row = index["rows"] + len(pending)
            _pwrite_all(fd, memoryview(frames).cast("B"), row * key.row_bytes)
            pending[name] = [row, stamp]
            if time.monotonic() - last > _COMMIT_SECONDS:
                commit()
                last = time.monotonic()
        commit()
    finally:
        os.close(fd)
    return problems


def _names(split: Split, key: StoreKey) -> list[str]:
    return [os.path.relpath(Path(r.path).resolve(), key.root) for r in split.records]


def held_rows(split: Split, key: StoreKey) -> StoreView | None:
    """Read only (no lock, no fill): the view of the clips of `split` that the store of `key` holds from
    their current file (row -1 for the others), or None when there is no such store."""
    if not (key.folder() / "index.json").is_file():
        return None
    index = _read_index(key.folder(), key)
    clips = index["clips"]
    rows = []
    for name, record in zip(_names(split, key), split.records, strict=True):
        held, stamp = clips.get(name), _mtime(record.path)
        rows.append(held[0] if held is not None and stamp is not None and held[1] == stamp else -1)
    return StoreView(key.folder(), key, index["rows"], np.array(rows, dtype=np.int64), {})


def fill_store(
    split: Split, key: StoreKey, decode: Callable[[list[Path]], Iterator], progress: bool = True
) -> StoreView:
    """Decode into the store of `key` every clip of `split` that it lacks or holds from an older file, with
    `decode(paths)` (yields per path uint8 [T, 3, H, W] or a DataError message, in order); return the split's
    view. CacheSpaceError when the disk lacks room for the clips to decode."""
    folder = key.folder()
    folder.mkdir(parents=True, exist_ok=True)
    names = _names(split, key)
    with _locked(folder / "lock"):
        index = _read_index(folder, key)
        todo = {}
        for name, record in zip(names, split.records, strict=True):
            stamp = _mtime(record.path)
            held = index["clips"].get(name)
            if (held is None or held[1] != stamp or stamp is None) and name not in todo:
                todo[name] = (Path(record.path), stamp)
        need, free = len(todo) * key.row_bytes, shutil.disk_usage(folder).free
        if todo and need + DISK_MARGIN > free:
            raise CacheSpaceError(
                f"{folder}: the frame cache needs {gb_text(need)} for {len(todo)} clips, "
                f"the disk has {gb_text(free)} free"
            )
        failed = _fill(folder, index, key, todo, decode, progress) if todo else {}
    rows = np.array(
        [index["clips"][n][0] if n in index["clips"] and n not in failed else -1 for n in names],
        dtype=np.int64,
    )
    problems = {i: failed[n] for i, n in enumerate(names) if n in failed}
    return StoreView(folder, key, index["rows"], rows, problems)

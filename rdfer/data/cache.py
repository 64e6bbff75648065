"""The frame cache: every clip decoded once into uint8 frames at the training size, kept on disk and reused by
every later epoch, fold and run; `CachedClipLoader` gathers the loader batches (rdfer.data.loader) from it.

The store: one folder per key (dataset, root, T, frame selection, image size, decoder) under frame_cache_dir()
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

While training, the split's rows live where choose_storage puts them: on the GPU when they fit beside the
memory training needs; else in host memory, each batch gathered into a pinned staging buffer and copied
asynchronously; else read from the memmap. Host and disk batches are gathered one batch ahead.
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rdfer.data.loader import PositionBatchLoader
from rdfer.data.records import DataError, Split

FORMAT = 1
STORAGES = ("device", "host", "disk")
_PLACES = {"device": "GPU memory", "host": "host memory", "disk": "the store's memory map"}
DEVICE_HEADROOM = 0.35  # share of the GPU's memory left free for training when the frames go on the device
HOST_SHARE = 0.5  # share of the available host memory the frames may take (split between local processes)
DISK_MARGIN = 2**30  # bytes a fill leaves free on the store's disk
_COMMIT_SECONDS = 10.0
_LOAD_ROWS = 64  # rows per copy when a split's rows are loaded into memory


class CacheSpaceError(OSError):
    """The store's disk lacks the space to decode a split into it."""


def frame_cache_dir() -> Path:
    from rdfer.data.prepare import cache_dir

    env = os.environ.get("RDFER_FRAME_CACHE")
    return Path(env) if env else cache_dir() / "frames"


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
        return frame_cache_dir() / name


def split_root(split: Split) -> Path:
    """The deepest folder that holds every clip of `split`, resolved."""
    return Path(os.path.commonpath([os.path.abspath(Path(r.path).parent) for r in split.records])).resolve()


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


def _fill(folder: Path, index: dict, key: StoreKey, todo: dict[str, tuple[Path, int | None]],
          decode: Callable[[list[Path]], Iterator], progress: bool) -> dict[str, str]:
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
        bar = tqdm(decode([p for p, _ in todo.values()]), total=len(todo), disable=not progress, leave=False,
                   desc=f"frame cache: decoding {len(todo)} clips into {folder.name}")
        for (name, (_, stamp)), out in zip(todo.items(), bar, strict=True):
            if isinstance(out, str):
                problems[name] = out
                continue
            frames = np.ascontiguousarray(out.numpy() if torch.is_tensor(out) else out)
            if frames.shape != key.row_shape or frames.dtype != np.uint8:
                raise RuntimeError(f"{todo[name][0]}: the decoder gave {frames.dtype} {frames.shape}, "
                                   f"expected uint8 {key.row_shape}")
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


def fill_store(split: Split, key: StoreKey, decode: Callable[[list[Path]], Iterator],
               progress: bool = True) -> StoreView:
    """Decode into the store of `key` every clip of `split` that it lacks or holds from an older file, with
    `decode(paths)` (yields per path uint8 [T, 3, H, W] or a DataError message, in order); return the split's
    view. CacheSpaceError when the disk lacks room for the clips to decode."""
    folder, root = key.folder(), Path(key.root)
    folder.mkdir(parents=True, exist_ok=True)
    names = [os.path.relpath(Path(r.path).resolve(), root) for r in split.records]
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
            raise CacheSpaceError(f"{folder}: the frame cache needs {_gb(need)} for {len(todo)} clips, "
                                  f"the disk has {_gb(free)} free")
        failed = _fill(folder, index, key, todo, decode, progress) if todo else {}
    rows = np.array([index["clips"][n][0] if n in index["clips"] and n not in failed else -1 for n in names],
                    dtype=np.int64)
    problems = {i: failed[n] for i, n in enumerate(names) if n in failed}
    return StoreView(folder, key, index["rows"], rows, problems)


# ---- where the rows live while training -----------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def choose_storage(nbytes: int, device: torch.device, *, free_device: int = 0, total_device: int = 0,
                   free_host: int = 0, local_processes: int = 1) -> tuple[str, str]:
    """(storage, why): 'device' when the rows fit in the GPU's free memory less DEVICE_HEADROOM of its total,
    else 'host' when they fit in HOST_SHARE of the available host memory (shared by the node's processes),
    else 'disk'."""
    if device.type == "cuda":
        room = free_device - DEVICE_HEADROOM * total_device
        if nbytes <= room:
            kept = _gb(DEVICE_HEADROOM * total_device)
            return "device", f"{_gb(nbytes)} fit beside {kept} kept for training"
        where = f"{_gb(nbytes)} exceed the GPU's {_gb(max(room, 0))} to spare; "
    else:
        where = "no CUDA device; "
    room = HOST_SHARE * free_host / max(local_processes, 1)
    if nbytes <= room:
        return "host", where + f"{_gb(nbytes)} fit in this process's {_gb(room)} of host memory"
    return "disk", where + f"{_gb(nbytes)} exceed this process's {_gb(room)} of host memory"


def _available_host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def measured_storage(nbytes: int, device: torch.device) -> tuple[str, str]:
    """choose_storage with this machine's free memory (LOCAL_WORLD_SIZE: torchrun's processes on the node)."""
    free_device = total_device = 0
    if device.type == "cuda":
        free_device, total_device = torch.cuda.mem_get_info(device)
    return choose_storage(nbytes, device, free_device=free_device, total_device=total_device,
                          free_host=_available_host_memory(),
                          local_processes=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def _load(view: StoreView, device: torch.device, progress: bool) -> torch.Tensor:
    """The split's rows in split order, uint8 [len(split), T, 3, H, W] on `device` (a bad clip's row is any
    row: the loader never reads it)."""
    mm = view.memmap()
    out = torch.empty((len(view.rows), *view.key.row_shape), dtype=torch.uint8, device=device)
    if not view.committed:
        return out
    rows = np.maximum(view.rows, 0)
    staging = None
    if device.type == "cuda":
        staging = torch.empty((_LOAD_ROWS, *view.key.row_shape), dtype=torch.uint8, pin_memory=True)
    for start in tqdm(range(0, len(rows), _LOAD_ROWS), disable=not progress, leave=False,
                      desc=f"frame cache: loading {len(rows)} clips to {device}"):
        at = rows[start:start + _LOAD_ROWS]
        if staging is None:  # np.take: several times faster than torch's CPU gathers of whole rows
            np.take(mm, at, axis=0, out=out[start:start + len(at)].numpy())
            continue
        np.take(mm, at, axis=0, out=staging[:len(at)].numpy())
        out[start:start + len(at)].copy_(staging[:len(at)])  # synchronous: the buffer is reused next
    return out


# ---- the loader -----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One batch: its good clips' split positions, the skipped clips' reports, and the error to raise instead
    of the batch when a bad clip is met without skip_bad."""

    good: list[int]
    skipped: list[str]
    error: DataError | None = None


class CachedClipLoader(PositionBatchLoader):
    """Batches as make_loader's (rdfer.data.loader's module doc), gathered from a filled store's `view` kept
    in `storage` ('device', 'host' or 'disk'); 'frames' arrive on `device`. Other keyword arguments: those of
    PositionBatchLoader (order, epoch, augmentation, skip_bad), so set_loader_epoch works on it."""

    def __init__(self, split: Split, view: StoreView, *, storage: str, device: torch.device | str = "cpu",
                 progress: bool = True, why: str = "", **kwargs) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        super().__init__(split, **kwargs)
        self.view, self.storage, self.device = view, storage, torch.device(device)
        self.why = why or f"storage={storage}"
        if storage == "device" and self.device.type != "cuda":
            raise ValueError(f"storage 'device' keeps the frames on a CUDA device, not {self.device}")
        on = self.device if storage == "device" else torch.device("cpu")
        self.frames = _load(view, on, progress) if storage != "disk" else None
        self.memmap = view.memmap() if storage == "disk" else None
        self._staging: list[torch.Tensor] = []  # pinned buffers, one per batch in flight (CUDA only)
        self._copied: list[torch.cuda.Event] = []
        self._copy_stream = None

    @property
    def placement(self) -> str:
        """Where the frames are kept and why, and the store's folder (build_loader's notice)."""
        return f"{_PLACES[self.storage]} ({self.why}), store {self.view.folder}"

    def _plan(self, positions: list[int]) -> _Plan:
        plan = _Plan([], [])
        for i in positions:
            problem = self.view.problems.get(i)
            if problem is None:
                plan.good.append(i)
                continue
            try:
                plan.skipped.append(str(self.dataset.skipped(i, DataError(problem))))
            except DataError as e:
                plan.error = e
                break
        return plan

    def _rows(self, good: list[int], out: np.ndarray | None = None) -> np.ndarray:
        """The rows of split positions `good`, from host memory or the memmap (into `out` when given)."""
        # np.take: several times faster than torch's CPU gathers of whole rows.
        if self.storage == "host":
            return np.take(self.frames.numpy(), good, axis=0, out=out)
        return np.take(self.memmap, self.view.rows[good], axis=0, out=out)

    def _stage(self, good: list[int], slot: int) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The rows of `good` (in a worker thread, one batch ahead of the consumer). On a CUDA run they are
        gathered into pinned buffer `slot` and copied to the device on a side stream; the event marks the
        copy's end."""
        if self.device.type != "cuda":
            return torch.from_numpy(self._rows(good)), None
        with torch.cuda.device(self.device):  # this thread's own current device is the first GPU
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(self.device)
            if len(self._staging) <= slot:
                shape = (self.batch_size, *self.view.key.row_shape)
                self._staging.append(torch.empty(shape, dtype=torch.uint8, pin_memory=True))
                self._copied.append(torch.cuda.Event())
            self._copied[slot].synchronize()  # the copy that last read this buffer is done
            staged = self._staging[slot][:len(good)]
            self._rows(good, out=staged.numpy())
            with torch.cuda.stream(self._copy_stream):
                frames = torch.empty(staged.shape, dtype=torch.uint8, device=self.device)
                frames.copy_(staged, non_blocking=True)
                self._copied[slot].record(self._copy_stream)
        return frames, self._copied[slot]

    def _prepare(self, positions: list[int], slot: int) -> tuple[_Plan, dict | None, tuple | None]:
        """A batch, one ahead of the consumer, in a worker thread: its plan; its labels, ids and augmentation
        rows; and (host, disk) its frames staged. _finish completes it when the consumer asks for it."""
        plan = self._plan(positions)
        if plan.error is not None or not plan.good:
            return plan, None, None
        batch = self.batch_of(plan.good, None) | {"skipped": plan.skipped}
        return plan, batch, self._stage(plan.good, slot) if self.storage != "device" else None

    def _finish(self, plan: _Plan, batch: dict | None, staged: tuple | None) -> dict:
        if plan.error is not None:
            raise plan.error  # at the bad clip's batch, as the CPU loader raises it
        if batch is None:
            return self.collate.empty(plan.skipped)
        if self.storage == "device":
            batch["frames"] = self.frames.index_select(0, torch.tensor(plan.good, device=self.device))
            return batch
        batch["frames"], copied = staged
        if copied is not None:  # the consumer's stream waits for the copy and keeps the memory until done
            current = torch.cuda.current_stream(self.device)
            current.wait_event(copied)
            batch["frames"].record_stream(current)
        return batch

    def __iter__(self) -> Iterator[dict]:
        with ThreadPoolExecutor(1, thread_name_prefix="frame-cache") as pool:
            ahead: Future | None = None
            for k, positions in enumerate(self.position_batches()):
                current = pool.submit(self._prepare, positions, k % 2)
                if ahead is not None:
                    yield self._finish(*ahead.result())
                ahead = current
            if ahead is not None:
                yield self._finish(*ahead.result())


def make_cached_loader(split: Split, *, storage: str, decoder: str, device: torch.device | str,
                       workers: int | None = None, progress: bool = True, **kwargs) -> CachedClipLoader:
    """Fill the store of `split` (decoder 'torch': the CPU loader's decoding with `workers` processes; 'dali':
    DALI on `device`), then a CachedClipLoader over it; storage 'auto' picks one with measured_storage.
    kwargs: PositionBatchLoader's (order, epoch, augmentation, skip_bad)."""
    device = torch.device(device)
    num_frames, size = kwargs.get("num_frames", 64), kwargs.get("image_size", 112)
    if decoder == "dali":
        from rdfer.data.dali import decode_clips_dali

        name = "dali-gpu" if device.type == "cuda" else "dali-cpu"

        def decode(paths):
            return decode_clips_dali(paths, num_frames, size, device, threads=workers)
    else:
        from rdfer.data.loader import decode_clips

        name = "pil"

        def decode(paths):
            return decode_clips(paths, num_frames, size, workers)
    key = StoreKey(split.dataset, str(split_root(split)), num_frames, size, name)
    view = fill_store(split, key, decode, progress)
    nbytes = len(split) * key.row_bytes
    why = f"data.cache={storage}"
    if storage == "auto":
        storage, why = measured_storage(nbytes, device)
    return CachedClipLoader(split, view, storage=storage, device=device, progress=progress, why=why,
                            **kwargs)

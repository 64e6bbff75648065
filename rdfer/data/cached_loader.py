"""The frame cache's loader: the loader batches (rdfer.data.loader's module doc) gathered from a store of
decoded frames (rdfer.data.cache), filled first with whatever clips it lacks.

While training, the split's rows live where choose_storage puts them: on the GPU when they fit beside the
memory training needs (each batch one index_select on the device); else in host memory, each batch gathered
into a pinned staging buffer and copied asynchronously on a side stream; else read from the store's memmap.
A worker thread prepares each batch (its augmentation rows, and its frames from host memory or disk) one
batch ahead of the consumer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from rdfer.config import DataConfig
from rdfer.data.cache import StoreKey, StoreView, fill_store, gb_text, split_root
from rdfer.data.loader import PositionBatchLoader
from rdfer.data.records import DataError, Split
from rdfer.errors import ConfigError

STORAGES = ("device", "host", "disk")
_PLACES = {"device": "GPU memory", "host": "host memory", "disk": "the store's memory map"}
DEVICE_HEADROOM = 0.35  # share of the GPU's memory left free for training when the frames go on the device
HOST_SHARE = 0.5  # share of the available host memory the frames may take (split between local processes)
_LOAD_ROWS = 64  # rows per copy when a split's rows are loaded into memory


def choose_storage(
    nbytes: int,
    device: torch.device,
    *,
    free_device: int = 0,
    total_device: int = 0,
    free_host: int = 0,
    local_processes: int = 1,
) -> tuple[str, str]:
    """(storage, why): 'device' when the rows fit in the GPU's free memory less DEVICE_HEADROOM of its total,
    else 'host' when they fit in HOST_SHARE of the available host memory (shared by the node's processes),
    else 'disk'."""
    if device.type == "cuda":
        room = free_device - DEVICE_HEADROOM * total_device
        if nbytes <= room:
            kept = gb_text(DEVICE_HEADROOM * total_device)
            return "device", f"{gb_text(nbytes)} fit beside {kept} kept for training"
        where = f"{gb_text(nbytes)} exceed the GPU's {gb_text(max(room, 0))} to spare; "
    else:
        where = "no CUDA device; "
    room = HOST_SHARE * free_host / max(local_processes, 1)
    if nbytes <= room:
        return "host", where + f"{gb_text(nbytes)} fit in this process's {gb_text(room)} of host memory"
    return "disk", where + f"{gb_text(nbytes)} exceed this process's {gb_text(room)} of host memory"


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
    return choose_storage(
        nbytes,
        device,
        free_device=free_device,
        total_device=total_device,
        free_host=_available_host_memory(),
        local_processes=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )


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
    for start in tqdm(
        range(0, len(rows), _LOAD_ROWS),
        disable=not progress,
        leave=False,
        desc=f"frame cache: loading {len(rows)} clips to {device}",
    ):
        at = rows[start : start + _LOAD_ROWS]
        if staging is None:  # np.take: several times faster than torch's CPU gathers of whole rows
            np.take(mm, at, axis=0, out=out[start : start + len(at)].numpy())
            continue
        np.take(mm, at, axis=0, out=staging[: len(at)].numpy())
        out[start : start + len(at)].copy_(staging[: len(at)])  # synchronous: the buffer is reused next
    return out


# ---- the loader -----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One batch: its good clips' split positions, the skipped clips' reports, and the error to raise instead
    of the batch when a bad clip is met without skip_bad."""

    good: list[int]
    skipped: list[str]
    error: DataError | None = None


@dataclass
class _Pinned:
    """A CUDA pass's two pinned staging buffers, the events of the copies that last read them, its stream."""

    buffers: list[torch.Tensor] = field(default_factory=list)
    copied: list[torch.cuda.Event] = field(default_factory=list)
    stream: torch.cuda.Stream | None = None


class CachedClipLoader(PositionBatchLoader):
    """Batches as make_loader's (rdfer.data.loader's module doc), gathered from a filled store's `view` kept
    in `storage` ('device', 'host' or 'disk'); 'frames' arrive on `device`. Other keyword arguments: those of
    PositionBatchLoader (order, epoch, augmentation, skip_bad), so set_loader_epoch works on it."""

    def __init__(
        self,
        split: Split,
        view: StoreView,
        *,
        storage: str,
        device: torch.device | str = "cpu",
        progress: bool = True,
        why: str = "",
        **kwargs,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        super().__init__(split, **kwargs)
        self.view, self.storage, self.device = view, storage, torch.device(device)
        self.why = why or f"storage={storage}"
        on = self.device if storage == "device" else torch.device("cpu")
        self.frames = _load(view, on, progress) if storage != "disk" else None
        self.memmap = view.memmap() if storage == "disk" else None

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

    def _stage(
        self, good: list[int], slot: int, pinned: _Pinned
    ) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The rows of `good` (in a worker thread, one batch ahead of the consumer). On a CUDA run they are
        gathered into `pinned` buffer `slot` and copied to the device on a side stream; the event marks the
        copy's end."""
        if self.device.type != "cuda":
            return torch.from_numpy(self._rows(good)), None
        with torch.cuda.device(self.device):  # this thread's own current device is the first GPU
            if pinned.stream is None:
                pinned.stream = torch.cuda.Stream(self.device)
            if len(pinned.buffers) <= slot:
                shape = (self.batch_size, *self.view.key.row_shape)
                pinned.buffers.append(torch.empty(shape, dtype=torch.uint8, pin_memory=True))
                pinned.copied.append(torch.cuda.Event())
            pinned.copied[slot].synchronize()  # the copy that last read this buffer is done
            staged = pinned.buffers[slot][: len(good)]
            self._rows(good, out=staged.numpy())
            with torch.cuda.stream(pinned.stream):
                frames = torch.empty(staged.shape, dtype=torch.uint8, device=self.device)
                frames.copy_(staged, non_blocking=True)
                pinned.copied[slot].record(pinned.stream)
        return frames, pinned.copied[slot]

    def _prepare(
        self, positions: list[int], slot: int, pinned: _Pinned
    ) -> tuple[_Plan, dict | None, tuple | None]:
        """A batch, one ahead of the consumer, in a worker thread: its plan; its labels, ids and augmentation
        rows; and (host, disk) its frames staged. _finish completes it when the consumer asks for it."""
        plan = self._plan(positions)
        if plan.error is not None or not plan.good:
            return plan, None, None
        batch = self.batch_of(plan.good, None) | {"skipped": plan.skipped}
        return plan, batch, self._stage(plan.good, slot, pinned) if self.storage != "device" else None

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
        pinned = _Pinned()  # this pass's own: a pass left midway may still be staging into its buffers
        with ThreadPoolExecutor(1, thread_name_prefix="frame-cache") as pool:
            ahead: Future | None = None
            for k, positions in enumerate(self.position_batches()):
                current = pool.submit(self._prepare, positions, k % 2, pinned)
                if ahead is not None:
                    yield self._finish(*ahead.result())
                ahead = current
            if ahead is not None:
                yield self._finish(*ahead.result())


def make_cached_loader(
    split: Split,
    *,
    storage: str,
    decoder: str,
    device: torch.device | str,
    workers: int | None = None,
    progress: bool = True,
    **kwargs,
) -> CachedClipLoader:
    """Fill the store of `split` (decoder 'torch': the CPU loader's decoding with `workers` processes; 'dali':
    DALI on `device`), then a CachedClipLoader over it; storage 'auto' picks one with measured_storage.
    kwargs: PositionBatchLoader's (num_frames, image_size, seed, order, epoch, augmentation, skip_bad)."""
    device = torch.device(device)
    if storage == "device" and device.type != "cuda":  # before the store is filled, which can take long
        raise ConfigError(
            f"data.cache=device keeps the frames on a CUDA device; this run is on {device} "
            "(use data.cache=auto, host or disk)"
        )
    num_frames = kwargs.setdefault("num_frames", DataConfig.num_frames)
    size = kwargs.setdefault("image_size", DataConfig.image_size)
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
    return CachedClipLoader(split, view, storage=storage, device=device, progress=progress, why=why, **kwargs)

"""The CPU clip loader: a torch Dataset over a Split and its DataLoader (the DALI pipeline's twin, baseline).

A clip is T frames at uniform indices (SPEC §1), resized to size x size, augmented per clip when training.
Batches are dicts {'frames': uint8 [B, T, 3, H, W], 'label': int64 [B], 'sample_id': int64 [B],
'skipped': list[str]}.

Epochs: the training order and the augmentation depend only on (seed, epoch, sample_id); call
`set_loader_epoch(loader, epoch)` before iterating an epoch. Worker processes are started anew by each
iteration (no persistent workers), so they see the epoch that was set.

`cache_split_frames` (config `data.cache_frames`) decodes a split once into this process's memory; the
augmentation works on the resized frames, so a cached clip gives exactly the batch a decoded one would.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm.auto import tqdm

from rdfer.data.augment import apply_augment, clip_augment_params
from rdfer.data.frames import count_frames, list_frames, read_clip, read_frame_files
from rdfer.data.records import ClipRecord, DataError, Split
from rdfer.data.sampling import epoch_order, uniform_indices


@dataclass(frozen=True)
class SkippedClip:
    """What `ClipDataset.__getitem__` returns for a bad clip when skip_bad=True; the collate drops it.

    (A bare None could not tell the main process which clip was bad when a worker read it.)
    """

    sample_id: int
    path: Path
    problem: str  # the DataError message, which names the file

    def __str__(self) -> str:
        return self.problem


def load_clip_frames(path: Path, num_frames: int, size: int) -> np.ndarray:
    """uint8 [num_frames, size, size, 3] RGB: the clip's frames at uniform indices over its length."""
    path = Path(path)
    if path.is_dir():
        files = list_frames(path)  # listed once, used for both the count and the read
        return read_frame_files(files, uniform_indices(len(files), num_frames), size)
    return read_clip(path, uniform_indices(count_frames(path), num_frames), size)


def _clip_tensor(path: Path, num_frames: int, size: int) -> torch.Tensor:
    """load_clip_frames as uint8 [T, 3, H, W]: a view of the decoded [T, H, W, 3] array, not a copy."""
    return torch.from_numpy(load_clip_frames(path, num_frames, size)).permute(0, 3, 1, 2)


# Decoded clips, uint8 [T, 3, H, W], by (path, T, size): filled by cache_split_frames in the main process and
# read by every later ClipDataset of this process and of the workers it forks (copy-on-write pages).
_DECODED: dict[tuple[str, int, int], torch.Tensor] = {}


class _DecodeAll(Dataset):
    def __init__(self, paths: list[Path], num_frames: int, size: int) -> None:
        self.paths, self.num_frames, self.size = paths, num_frames, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        try:
            return _clip_tensor(self.paths[i], self.num_frames, self.size)
        except DataError:
            return None  # left uncached: the loader reads it again and raises or skips it as usual


def cache_split_frames(split: Split, num_frames: int, size: int, workers: int | None = None,
                       progress: bool = True) -> int:
    """Decode every clip of `split` not yet cached (with `workers` processes) and keep it in RAM:
    len(split) * T * 3 * size^2 bytes. Returns how many clips were decoded now. The cache lives as long as
    the process and assumes the files do not change meanwhile."""
    todo = sorted({str(r.path) for r in split.records} - {k[0] for k in _DECODED if k[1:] == (num_frames, size)})
    if not todo:
        return 0
    workers = default_workers() if workers is None else workers
    # A private generator, as in make_loader: filling the cache must not advance torch's global RNG, or a run
    # that fills it would draw other random numbers than one that finds it full.
    decoded = DataLoader(_DecodeAll([Path(p) for p in todo], num_frames, size), batch_size=None,
                         num_workers=workers, generator=torch.Generator().manual_seed(0))
    for path, clip in zip(todo, tqdm(decoded, total=len(todo), desc=f"caching {split.dataset}/{split.name}",
                                     disable=not progress, leave=False)):
        if clip is not None:
            _DECODED[(path, num_frames, size)] = clip.clone(memory_format=torch.contiguous_format)  # not a worker's shm
    return len(todo)


def clear_frame_cache() -> None:
    _DECODED.clear()


class ClipDataset(Dataset):
    """Clips of a Split as dicts {frames: uint8 [T, 3, H, W], label: int64, sample_id: int64}."""

    def __init__(
        self,
        split: Split,
        num_frames: int = 64,
        image_size: int = 112,
        train: bool = False,
        seed: int = 42,
        skip_bad: bool = False,
        augment: dict | None = None,
    ) -> None:
        """augment: keyword arguments of augment.sample_augment (scale, ratio, jitter); SPEC §1's by default."""
        self.split = split
        self.augment = dict(augment or {})
        self.num_frames = num_frames
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.skip_bad = skip_bad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor] | SkippedClip:
        record: ClipRecord = self.split.records[i]
        frames = _DECODED.get((str(record.path), self.num_frames, self.image_size))
        if frames is None:
            try:
                frames = _clip_tensor(record.path, self.num_frames, self.image_size)
            except DataError as e:
                if self.skip_bad:
                    return SkippedClip(record.sample_id, Path(record.path), str(e))
                raise
        if self.train:
            params = clip_augment_params(self.seed, self.epoch, record.sample_id, self.image_size, **self.augment)
            frames = apply_augment(frames, params)
        return {
            "frames": frames,
            "label": torch.tensor(record.label, dtype=torch.int64),
            "sample_id": torch.tensor(record.sample_id, dtype=torch.int64),
        }


class ClipCollate:
    """Stacks good samples and lists the skipped ones; a batch may end up with B = 0 if all were bad."""

    def __init__(self, num_frames: int, image_size: int) -> None:
        self.empty_shape = (0, num_frames, 3, image_size, image_size)

    def __call__(self, samples: list[dict[str, torch.Tensor] | SkippedClip]) -> dict:
        good = [s for s in samples if not isinstance(s, SkippedClip)]
        skipped = [str(s) for s in samples if isinstance(s, SkippedClip)]
        if not good:
            return {
                "frames": torch.empty(self.empty_shape, dtype=torch.uint8),
                "label": torch.empty(0, dtype=torch.int64),
                "sample_id": torch.empty(0, dtype=torch.int64),
                "skipped": skipped,
            }
        # default_collate stacks straight into shared memory inside a worker, saving a copy on the way back.
        batch = default_collate(good)
        batch["skipped"] = skipped
        return batch


class EpochShuffleSampler(Sampler[int]):
    """A training order that is a pure function of (seed, epoch): see sampling.epoch_order."""

    def __init__(self, num_samples: int, seed: int, epoch: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.num_samples, self.seed, self.epoch).tolist())

    def __len__(self) -> int:
        return self.num_samples


def default_workers() -> int:
    """Loader worker processes: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, 8)


def make_loader(
    split: Split,
    *,
    batch_size: int,
    train: bool,
    num_frames: int = 64,
    image_size: int = 112,
    workers: int | None = None,
    seed: int = 42,
    skip_bad: bool = False,
    sampler: Sampler | None = None,
    epoch: int = 0,
    pin_memory: bool = False,
    augment: dict | None = None,
) -> DataLoader:
    """A DataLoader of clip batches (see the module doc).

    train: order from (seed, epoch), last partial batch dropped. Eval: every clip once, in split order.
    `sampler` (e.g. a DistributedSampler) replaces the default order; it should have set_epoch if it shuffles.
    """
    dataset = ClipDataset(split, num_frames, image_size, train=train, seed=seed, skip_bad=skip_bad, augment=augment)
    dataset.set_epoch(epoch)
    if sampler is None:
        sampler = EpochShuffleSampler(len(dataset), seed, epoch) if train else None
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if train:
        available = len(sampler) if sampler is not None else len(dataset)
        if available < batch_size:
            # drop_last would silently yield no batch at all.
            raise ValueError(f"{split.dataset}/{split.name}: {available} training clips "
                             f"< batch_size {batch_size}")
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=train,
        num_workers=workers,
        collate_fn=ClipCollate(num_frames, image_size),
        pin_memory=pin_memory,
        # A private generator: each iter() draws a worker base seed from it, which would otherwise advance
        # torch's global RNG (and shift the model's random stream). Nothing here uses that seed.
        generator=torch.Generator().manual_seed(seed),
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Point the augmentation and the order of a make_loader loader at `epoch` (call before iterating it)."""
    loader.dataset.set_epoch(epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


@dataclass
class SkipReport:
    """Accumulates the clips skipped over an epoch, batch by batch."""

    entries: list[str] = field(default_factory=list)

    def add(self, batch: dict) -> None:
        self.entries.extend(batch["skipped"])

    def __len__(self) -> int:
        return len(self.entries)

    def summary(self) -> str:
        if not self.entries:
            return "skipped 0 clips"
        return f"skipped {len(self.entries)} clips:\n" + "\n".join(f"  {e}" for e in self.entries)

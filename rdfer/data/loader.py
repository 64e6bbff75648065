"""The CPU clip loader: a torch Dataset over a Split and its DataLoader (the DALI pipeline's twin, baseline).

A clip is T frames at uniform indices over its length, each resized to size x size. Every loader of the
package (this one, rdfer.data.dali, rdfer.data.cached_loader) yields the same batches:
    {'frames': uint8 [B, T, 3, H, W] resized only, never augmented, 'label': int64 [B],
     'sample_id': int64 [B], 'skipped': list[str], and when training 'augment': float32 [B, 8]}
Row b of 'augment' is clip b's augmentation (augment.PARAM_COLUMNS, from clip_augment_params); the consumer
applies it to the frames (rdfer.ops.augment.apply_augment defines what it does), so no loader spends time on
pixels that a GPU transforms faster, and a decoded frame can be cached once for every epoch.

Epochs: the training order and the augmentation depend only on (seed, epoch, sample_id); call
`set_loader_epoch(loader, epoch)` before iterating an epoch. Worker processes are started anew by each
iteration (no persistent workers), so they see the epoch that was set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from rdfer.config import DataConfig, RunConfig
from rdfer.data.augment import clip_augment_params
from rdfer.data.frames import count_frames, list_frames, read_clip, read_frame_files
from rdfer.data.records import ClipRecord, DataError, Split
from rdfer.data.sampling import epoch_order, uniform_indices
from rdfer.ops.augment import PARAM_COLUMNS, AugmentParams, params_to_tensor


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


class _DecodeEach(Dataset):
    def __init__(self, paths: list[Path], num_frames: int, size: int) -> None:
        self.paths, self.num_frames, self.size = paths, num_frames, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        try:
            return _clip_tensor(self.paths[i], self.num_frames, self.size).contiguous()
        except DataError as e:
            return str(e)


def decode_clips(paths: list[Path], num_frames: int, size: int, workers: int | None = None) -> Iterator:
    """Each clip of `paths`, in order, decoded by `workers` processes as the loader decodes it: contiguous
    uint8 [T, 3, size, size], or the message of its DataError (the frame cache's CPU filler)."""
    workers = default_workers() if workers is None else workers
    # A private generator, as in make_loader: decoding must not advance torch's global RNG, or a run that
    # fills the frame cache would draw other random numbers than one that finds it full.
    yield from DataLoader(
        _DecodeEach(list(paths), num_frames, size),
        batch_size=None,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


# The columns of a batch's 'augment' rows: AugmentParams' fields in their order, flip as 0.0 or 1.0.
class ClipDataset(Dataset):
    """Clips of a Split as dicts {frames: uint8 [T, 3, H, W], label: int64, sample_id: int64, and when
    training augment: float32 [8]}: the frames resized only, the augmentation as parameters (module doc)."""

    def __init__(
        self,
        split: Split,
        num_frames: int = DataConfig.num_frames,
        image_size: int = DataConfig.image_size,
        train: bool = False,
        seed: int = RunConfig.seed,
        skip_bad: bool = False,
        augment: dict | None = None,
    ) -> None:
        """augment: keyword arguments of augment.sample_augment (scale, ratio, jitter), else its defaults."""
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

    def augment_params(self, sample_id: int) -> AugmentParams:
        """Clip `sample_id`'s augmentation in the current epoch (training)."""
        return clip_augment_params(self.seed, self.epoch, sample_id, self.image_size, **self.augment)

    def skipped(self, i: int, error: DataError) -> SkippedClip:
        """The report of clip `i` that failed with `error`, or `error` raised again without skip_bad."""
        if not self.skip_bad:
            raise error
        record = self.split.records[i]
        return SkippedClip(record.sample_id, Path(record.path), str(error))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor] | SkippedClip:
        record: ClipRecord = self.split.records[i]
        try:
            frames = _clip_tensor(record.path, self.num_frames, self.image_size)
        except DataError as e:
            return self.skipped(i, e)
        sample = {
            "frames": frames,
            "label": torch.tensor(record.label, dtype=torch.int64),
            "sample_id": torch.tensor(record.sample_id, dtype=torch.int64),
        }
        if self.train:
            sample["augment"] = params_to_tensor(self.augment_params(record.sample_id))[0]
        return sample


class ClipCollate:
    """Stacks good samples and lists the skipped ones; a batch may end up with B = 0 if all were bad."""

    def __init__(self, num_frames: int, image_size: int, train: bool = False) -> None:
        self.empty_shape = (0, num_frames, 3, image_size, image_size)
        self.train = train

    def __call__(self, samples: list[dict[str, torch.Tensor] | SkippedClip]) -> dict:
        good = [s for s in samples if not isinstance(s, SkippedClip)]
        skipped = [str(s) for s in samples if isinstance(s, SkippedClip)]
        if not good:
            return self.empty(skipped)
        # default_collate stacks straight into shared memory inside a worker, saving a copy on the way back.
        batch = default_collate(good)
        batch["skipped"] = skipped
        return batch

    def empty(self, skipped: list[str]) -> dict:
        batch = {
            "frames": torch.empty(self.empty_shape, dtype=torch.uint8),
            "label": torch.empty(0, dtype=torch.int64),
            "sample_id": torch.empty(0, dtype=torch.int64),
            "skipped": skipped,
        }
        if self.train:
            batch["augment"] = torch.empty(0, len(PARAM_COLUMNS), dtype=torch.float32)
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


def _epoch_sampler(split: Split, train: bool, batch_size: int, seed: int, sampler, epoch: int):
    """The sampler every loader uses: `sampler` (pointed at `epoch`), else EpochShuffleSampler when training,
    else None (the split in order). Training needs a full batch: drop_last would silently yield none."""
    if sampler is None:
        sampler = EpochShuffleSampler(len(split.records), seed, epoch) if train else None
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    available = len(sampler) if sampler is not None else len(split.records)
    if train and available < batch_size:
        raise ValueError(
            f"{split.dataset}/{split.name}: {available} training clips < batch_size {batch_size}"
        )
    return sampler


def make_loader(
    split: Split,
    *,
    batch_size: int,
    train: bool,
    num_frames: int = DataConfig.num_frames,
    image_size: int = DataConfig.image_size,
    workers: int | None = None,
    seed: int = RunConfig.seed,
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
    dataset = ClipDataset(
        split, num_frames, image_size, train=train, seed=seed, skip_bad=skip_bad, augment=augment
    )
    dataset.set_epoch(epoch)
    sampler = _epoch_sampler(split, train, batch_size, seed, sampler, epoch)
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=train,
        num_workers=workers,
        collate_fn=ClipCollate(num_frames, image_size, train),
        pin_memory=pin_memory,
        # A private generator: each iter() draws a worker base seed from it, which would otherwise advance
        # torch's global RNG (and shift the model's random stream). Nothing here uses that seed.
        generator=torch.Generator().manual_seed(seed),
    )


class PositionBatchLoader:
    """What the DALI and cache loaders share with make_loader's DataLoader: `dataset` (a ClipDataset: the
    epoch, the augmentation parameters, the CPU twin of each clip) and `sampler`, so set_loader_epoch works on
    all three; the same batches of split positions (training drops the last partial batch), the same len()."""

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        train: bool,
        num_frames: int = DataConfig.num_frames,
        image_size: int = DataConfig.image_size,
        seed: int = RunConfig.seed,
        skip_bad: bool = False,
        sampler: Sequence[int] | Sampler | None = None,
        epoch: int = 0,
        augment: dict | None = None,
    ):
        self.dataset = ClipDataset(
            split, num_frames, image_size, train=train, seed=seed, skip_bad=skip_bad, augment=augment
        )
        self.dataset.set_epoch(epoch)
        self.sampler = _epoch_sampler(split, train, batch_size, seed, sampler, epoch)
        self.batch_size, self.train = batch_size, train
        self.collate = ClipCollate(num_frames, image_size, train)

    def position_batches(self) -> list[list[int]]:
        order = list(range(len(self.dataset))) if self.sampler is None else [int(i) for i in self.sampler]
        stop = len(order) - len(order) % self.batch_size if self.train else len(order)
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batch_of(self, positions: list[int], frames: torch.Tensor) -> dict:
        """The batch of the good clips at `positions` (split order positions) with their `frames`."""
        records = [self.dataset.split.records[i] for i in positions]
        batch = {
            "frames": frames,
            "label": torch.tensor([r.label for r in records], dtype=torch.int64),
            "sample_id": torch.tensor([r.sample_id for r in records], dtype=torch.int64),
        }
        if self.train:
            batch["augment"] = params_to_tensor([self.dataset.augment_params(r.sample_id) for r in records])
        return batch


def set_loader_epoch(loader: DataLoader | PositionBatchLoader, epoch: int) -> None:
    """Point the augmentation and the order of any of the package's loaders at `epoch` (before iterating)."""
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

"""What a dataset reader hands to the rest of the package: one record per clip of a split."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """Bad input data: the message names the file and the problem."""


@dataclass(frozen=True)
class ClipRecord:
    sample_id: int  # position in its split, 0..N-1: indexes the per-sample agreement memory
    key: str  # the dataset's own clip id (DFEW "00001", FERV39K "Scene/Class/id", MAFW "00001.mp4")
    path: Path  # a folder of frame images, or a video file
    label: int  # 0-based index into the split's `classes`


@dataclass
class Split:
    dataset: str  # "dfew", "ferv39k", "mafw", "manifest", "synthetic"
    name: str  # "train" or "test"
    classes: tuple[str, ...]  # the dataset's canonical class order
    records: list[ClipRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for r in self.records:
            counts[r.label] += 1
        return counts

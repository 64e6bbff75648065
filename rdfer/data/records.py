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


def read_split_lines(path: Path) -> list[str]:
    """The lines of a split file (a byte-order mark dropped); DataError naming the file if it is missing."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e})") from None

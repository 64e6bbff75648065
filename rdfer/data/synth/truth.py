"""Reading SynthDFER's ground_truth.csv back: one `ClipTruth` per clip."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from rdfer.data.records import DataError
from rdfer.data.synth.generate import GROUND_TRUTH, GROUND_TRUTH_COLUMNS


@dataclass(frozen=True)
class ClipTruth:
    """Labels are 1..7 as in the file (DFEW order); `true_index` is the 0-based true class."""

    split: str
    video_name: int
    true_label: int
    given_label: int
    is_noisy: bool
    is_hard: bool
    hard_reason: str  # "" | intensity | short_apex | distractor
    intensity: float  # apex intensity of the target expression (0 for neutral clips)
    onset: int  # 1-based frame numbers of the target's time course; 0 for neutral clips
    apex_start: int
    apex_end: int
    offset: int
    distractor_class: int | None  # 1..7
    distractor_start: int | None
    distractor_end: int | None
    distractor_intensity: float | None
    num_frames: int
    identity: int

    @property
    def key(self) -> str:
        return f"{self.video_name:05d}"

    @property
    def true_index(self) -> int:
        return self.true_label - 1


def load_ground_truth(root: str | os.PathLike) -> list[ClipTruth]:
    """Every clip's ground truth, in file order (train clips first)."""
    path = Path(root) / GROUND_TRUTH
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != GROUND_TRUTH_COLUMNS:
                raise DataError(f"{path}:1: not a SynthDFER ground-truth header: {reader.fieldnames!r}")
            return [_parse(path, reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DataError(f"{path}: ground truth not found (is {root} a SynthDFER folder?)") from None


def _parse(path: Path, line: int, row: dict[str, str]) -> ClipTruth:
    def opt(text: str, kind: type) -> object:
        return kind(text) if text != "" else None

    try:
        return ClipTruth(
            split=row["split"],
            video_name=int(row["video_name"]),
            true_label=int(row["true_label"]),
            given_label=int(row["given_label"]),
            is_noisy=row["is_noisy"] == "1",
            is_hard=row["is_hard"] == "1",
            hard_reason=row["hard_reason"],
            intensity=float(row["intensity"]),
            onset=int(row["onset"]),
            apex_start=int(row["apex_start"]),
            apex_end=int(row["apex_end"]),
            offset=int(row["offset"]),
            distractor_class=opt(row["distractor_class"], int),
            distractor_start=opt(row["distractor_start"], int),
            distractor_end=opt(row["distractor_end"], int),
            distractor_intensity=opt(row["distractor_intensity"], float),
            num_frames=int(row["num_frames"]),
            identity=int(row["identity"]),
        )
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}:{line}: bad ground-truth row ({e})") from None

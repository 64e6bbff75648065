"""Reader of FERV39K's official split (one split, no folds).

Layout under `root`:

    4_setups/All_scenes/train_All.csv    NO header; one clip a line: `<Scene>/<Class>/<id> <Class>`
    4_setups/All_scenes/test_All.csv
    2_ClipsforFaceCrop/<Scene>/<Class>/<id>/    face frames of a clip

Every line is a clip, the first one included (reading the file as if it had a header loses a clip).

Class order. Public code disagrees on FERV39K's order (DFEW's order vs alphabetical). This package pins the
DFEW-like order of the FERV39K paper's tables, FERV39K_CLASSES = Happy, Sad, Neutral, Angry, Surprise,
Disgust, Fear, and maps each line's class word to it by name, case-insensitively; row order never matters.

The label is the second column. Should a line's path name another class than its label column, the label
column wins and the reader logs a warning with the number of such lines (the official files have none).

FERV39K ships its face crops as frame folders only, so `source="frames"` is the only source.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rdfer.data.records import ClipRecord, DataError, Split, read_word_split
from rdfer.errors import ConfigError

FERV39K_CLASSES: tuple[str, ...] = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")
SPLITS = ("train", "test")
SOURCES = ("frames",)

log = logging.getLogger(__name__)


def ferv39k_split_file(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "4_setups" / "All_scenes" / f"{split}_All.csv"


def read_ferv39k(root: str | os.PathLike, split: str, source: str = "frames") -> Split:
    """Read the train or test split; keys are the file's `Scene/Class/id`, labels index FERV39K_CLASSES."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if source not in SOURCES:
        raise ConfigError(
            f"{root}: FERV39K ships frame folders only (2_ClipsforFaceCrop); source {source!r} "
            "is not available (use a manifest for your own video files)"
        )
    path = ferv39k_split_file(root, split)
    frames = root / "2_ClipsforFaceCrop"
    records: list[ClipRecord] = []
    disagree: list[int] = []
    for line_no, key, label in read_word_split(
        path, "<Scene>/<Class>/<id> <Class>", FERV39K_CLASSES, "FERV39K"
    ):
        parts = key.split("/")
        if len(parts) != 3 or not all(parts):
            raise DataError(f"{path}:{line_no}: clip path must be '<Scene>/<Class>/<id>', found {key!r}")
        if parts[1].lower() != FERV39K_CLASSES[label].lower():
            disagree.append(line_no)
        records.append(ClipRecord(sample_id=len(records), key=key, path=frames / key, label=label))
    if disagree:
        log.warning(
            "%s: %d line(s) name another class in the path than in the label column; "
            "the label column is used (first: line %d)",
            path,
            len(disagree),
            disagree[0],
        )
    return Split(dataset="ferv39k", name=split, classes=FERV39K_CLASSES, records=records)

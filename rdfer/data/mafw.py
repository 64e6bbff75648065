"""Reader of MAFW's official single-label 5-fold split (11 classes).

Layout under `root` (each folder an option, relative to `root` or absolute):

    <split_dir>/single/no_caption/set_<fold>/train.txt   one clip a line: `<id>.mp4 <class word>`
    <split_dir>/single/no_caption/set_<fold>/test.txt
    <clips_dir>/<id>.mp4      the clip as a video file (source="video", the default); clips_dir = "data/clips"
    <frames_dir>/<id>/        face frames of a clip (source="frames"); frames_dir = "data/frames"

`split_dir` defaults to "split"; MAFW releases and public code also name it "anno" (or a folder with spaces
in its name), so pass whichever folder holds `single/no_caption/set_K/`.

Class order. Public code disagrees on MAFW's order; this package pins the alphabetical order of the 11 words
as the canonical one (MAFW_CLASSES) and maps each line's word by name, case-insensitively; row order never
matters.
"""

from __future__ import annotations

import os
from pathlib import Path

from rdfer.data.records import ClipRecord, DataError, Split, read_word_split

MAFW_CLASSES: tuple[str, ...] = (
    "anger",
    "anxiety",
    "contempt",
    "disappointment",
    "disgust",
    "fear",
    "happiness",
    "helplessness",
    "neutral",
    "sadness",
    "surprise",
)
MAFW_FOLDS = range(1, 6)
SPLITS = ("train", "test")
SOURCES = ("video", "frames")


def mafw_split_file(
    root: str | os.PathLike, split: str, fold: int, split_dir: str | os.PathLike = "split"
) -> Path:
    return Path(root) / split_dir / "single" / "no_caption" / f"set_{fold}" / f"{split}.txt"


def read_mafw(
    root: str | os.PathLike,
    split: str,
    fold: int = 1,
    split_dir: str | os.PathLike = "split",
    source: str = "video",
    clips_dir: str | os.PathLike = "data/clips",
    frames_dir: str | os.PathLike = "data/frames",
) -> Split:
    """Read one split of one MAFW fold; keys are the file names in the split file ("00025.mp4")."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if source not in SOURCES:
        raise DataError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    if fold not in MAFW_FOLDS:
        raise DataError(f"{root}: MAFW has folds 1..5, not fold {fold!r}")
    path = mafw_split_file(root, split, fold, split_dir)
    clips, frames = root / clips_dir, root / frames_dir
    records: list[ClipRecord] = []
    for _, key, label in read_word_split(path, "<id>.mp4 <class word>", MAFW_CLASSES, "MAFW"):
        clip = clips / key if source == "video" else frames / Path(key).stem
        records.append(ClipRecord(sample_id=len(records), key=key, path=clip, label=label))
    return Split(dataset="mafw", name=split, classes=MAFW_CLASSES, records=records)

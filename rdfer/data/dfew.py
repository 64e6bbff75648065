"""Reader of DFEW's official 5-fold single-label split (also the layout SynthDFER is written in).

Layout under `root`:

    EmoLabel_DataSplit/train(single-labeled)/set_<fold>.csv header video_name,label; rows <int id>,<1..7>
    EmoLabel_DataSplit/test(single-labeled)/set_<fold>.csv
    Clip/clip_224x224/<id:05d>/                               face frames of a clip (source="frames")
    Clip/original/<id:05d>.{mp4,avi,webm,mkv}                 the clip as one video file (source="video")

Labels 1..7 of the CSV are DFEW_CLASSES in order (index = label - 1). The reader touches the disk only to read
the split file (and, for source="video", to list `Clip/original` once); whether each clip's frames exist is
checked later, by the loader or by `summary --verify`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rdfer.data.records import ClipRecord, DataError, Split, read_two_column_csv

DFEW_CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
DFEW_FOLDS = range(1, 6)
SPLITS = ("train", "test")
SOURCES = ("frames", "video")
# Preference order when one id has several video files (SynthDFER writes .webm, or .mp4 where no VP9 encoder).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv")
_HEADER = ("video_name", "label")


def dfew_split_file(root: str | os.PathLike, split: str, fold: int) -> Path:
    return Path(root) / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"


def read_dfew(root: str | os.PathLike, split: str, fold: int = 1, source: str = "frames") -> Split:
    """Read one split of one DFEW fold; keys are the 5-digit ids ("00001"), labels 0..6."""
    root = Path(root)
    _check_choice("split", split, SPLITS)
    _check_choice("source", source, SOURCES)
    if fold not in DFEW_FOLDS:
        raise DataError(f"{root}: DFEW has folds 1..5, not fold {fold!r}")
    path = dfew_split_file(root, split, fold)
    rows = _read_rows(path)
    locate = _video_locator(root) if source == "video" else _frames_locator(root)
    records = [
        ClipRecord(sample_id=i, key=key, path=locate(key), label=label) for i, (key, label) in enumerate(rows)
    ]
    return Split(dataset="dfew", name=split, classes=DFEW_CLASSES, records=records)


def _read_rows(path: Path) -> list[tuple[str, int]]:
    """(5-digit key, 0-based label) per data row of a DFEW split CSV, validated."""
    rows: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    for line, video, label in read_two_column_csv(path, _HEADER, "split file"):
        vid = _parse_int(path, line, "video_name", video)
        lab = _parse_int(path, line, "label", label)
        if vid < 0:
            raise DataError(f"{path}:{line}: video_name must be a non-negative id, found {vid}")
        if not 1 <= lab <= len(DFEW_CLASSES):
            raise DataError(f"{path}:{line}: label must be 1..{len(DFEW_CLASSES)}, found {lab}")
        key = f"{vid:05d}"
        if key in first_line:
            raise DataError(f"{path}:{line}: clip {key} is listed twice (first on line {first_line[key]})")
        first_line[key] = line
        rows.append((key, lab - 1))
    return rows


def _parse_int(path: Path, line: int, column: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataError(f"{path}:{line}: {column} must be an integer, found {text!r}") from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DataError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _frames_locator(root: Path) -> Callable[[str], Path]:
    frames = root / "Clip" / "clip_224x224"
    return lambda key: frames / key


def _video_locator(root: Path) -> Callable[[str], Path]:
    """Map key -> video file with one listing of Clip/original, not one disk access per clip.

    A clip with no video file gets the path `<key>.mp4`, so that verification reports it as missing.
    """
    videos = root / "Clip" / "original"
    found: dict[str, str] = {}
    rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
    try:
        with os.scandir(videos) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in rank and (stem not in found or rank[ext.lower()] < rank[_ext(found[stem])]):
                    found[stem] = entry.name
    except FileNotFoundError:
        pass  # every clip then points at a missing file; verify lists each one
    return lambda key: videos / found.get(key, key + VIDEO_EXTENSIONS[0])


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()

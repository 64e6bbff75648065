"""Reader of a user's own data: a manifest CSV listing clips and their labels.

    path,label
    clips/0001,happy          a folder of frame images ...
    /data/videos/x.mp4,sad    ... or a video file; relative paths are relative to the CSV's folder
    clips/0002,3              an integer label is a 0-based index into `classes`

Class order: with `classes` given, class words are mapped to it by name (exact match first, then
case-insensitively) and integers index it. With `classes=None` the order is the sorted set of the words found
in this file; a file whose labels are all integers gets the classes "0".."<max label>". A file that mixes
words and integers needs `classes`. A test manifest must be read with the train manifest's classes, else a
class missing from one file would shift every index (`rdfer.data.datasets.load_split` does this for you).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rdfer.data.records import ClipRecord, DataError, Split, read_two_column_csv

_HEADER = ("path", "label")


def read_manifest(
    csv_path: str | os.PathLike, classes: Sequence[str] | None = None, split: str = "train"
) -> Split:
    """Read a `path,label` manifest; keys are the paths as written in the file."""
    csv_path = Path(csv_path)
    rows = _read_rows(csv_path)
    names = _class_order(csv_path, rows) if classes is None else _checked_classes(csv_path, classes)
    exact = {word: i for i, word in enumerate(names)}
    folded = {word.lower(): i for i, word in enumerate(names)}
    base = csv_path.parent
    records = []
    for line, clip, text in rows:
        label = exact.get(text, folded.get(text.lower()))
        if label is None:
            label = _int_or_none(text)
            if label is None:
                raise DataError(
                    f"{csv_path}:{line}: unknown class word {text!r} (classes: {', '.join(names)})"
                )
            if not 0 <= label < len(names):
                raise DataError(f"{csv_path}:{line}: label index {label} is outside 0..{len(names) - 1}")
        records.append(ClipRecord(sample_id=len(records), key=clip, path=base / clip, label=label))
    return Split(dataset="manifest", name=split, classes=names, records=records)


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path text, label text) per data row, with the header and row shapes checked."""
    rows = read_two_column_csv(path, _HEADER, "manifest file", ignore_case=True)
    first_line: dict[str, int] = {}
    for line, clip, label in rows:
        if not clip or not label:
            raise DataError(f"{path}:{line}: empty path or label in {[clip, label]!r}")
        if clip in first_line:
            raise DataError(f"{path}:{line}: {clip} is listed twice (first on line {first_line[clip]})")
        first_line[clip] = line
    return rows


def _class_order(path: Path, rows: list[tuple[int, str, str]]) -> tuple[str, ...]:
    """Classes of a manifest read without `classes`: sorted words, or "0".."max" when all labels are ints."""
    if not rows:
        raise DataError(f"{path}: the manifest lists no clips, so it names no classes")
    ints = [(line, _int_or_none(text)) for line, _, text in rows]
    words = {text for (_, _, text), (_, n) in zip(rows, ints, strict=False) if n is None}
    if not words:
        return tuple(str(i) for i in range(max(n for _, n in ints) + 1))
    if any(n is not None for _, n in ints):
        line = next(line for line, n in ints if n is not None)
        raise DataError(
            f"{path}:{line}: the manifest mixes class words and integer labels; "
            "pass the class list (classes=...) to say what the integers mean"
        )
    return _checked_classes(path, sorted(words))


def _checked_classes(path: Path, classes: Sequence[str]) -> tuple[str, ...]:
    names = tuple(classes)
    if not names:
        raise DataError(f"{path}: the class list is empty")
    seen: dict[str, str] = {}
    for word in names:
        if word.lower() in seen:
            raise DataError(f"{path}: class words {seen[word.lower()]!r} and {word!r} differ only by case")
        seen[word.lower()] = word
    return names


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None

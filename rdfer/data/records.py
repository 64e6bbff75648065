"""What a dataset reader hands to the rest of the package: one record per clip of a split."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from rdfer.errors import DataError


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


def read_two_column_csv(
    path: Path, header: tuple[str, str], what: str, ignore_case: bool = False
) -> list[tuple[int, str, str]]:
    """(line number, first field, second field), stripped, per data row of a CSV whose first line is `header`
    (case-insensitively with ignore_case). Blank rows are skipped; any other shape is a DataError naming the
    line.
    `what` names the file in the not-found error ("split file", "manifest file")."""
    expected = ",".join(header)
    try:
        # utf-8-sig: a CSV re-saved by a spreadsheet tool starts with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            found = next(reader, None)
            names = [h.strip().lower() if ignore_case else h.strip() for h in found or []]
            if found is None or names != list(header):
                raise DataError(f"{path}:1: expected the header '{expected}', found {found!r}")
            rows = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2:
                    line = reader.line_num
                    raise DataError(f"{path}:{line}: expected 2 fields '{expected}', found {row!r}")
                rows.append((reader.line_num, row[0].strip(), row[1].strip()))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    return rows


def read_word_split(
    path: Path, shape: str, classes: tuple[str, ...], dataset: str
) -> list[tuple[int, str, int]]:
    """(line number, clip key, label index) per line "<key> <class word>" of a whitespace-separated split file
    (FERV39K, MAFW); class words match `classes` case-insensitively. Blank lines are skipped; a line of
    another shape, an unknown class word or a clip listed twice is a DataError naming the line. `shape`
    describes a line for the message."""
    index = {word.lower(): i for i, word in enumerate(classes)}
    rows: list[tuple[int, str, int]] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(read_split_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{path}:{line_no}: expected '{shape}', found {line!r}")
        key, word = fields
        label = index.get(word.lower())
        if label is None:
            raise DataError(
                f"{path}:{line_no}: unknown class word {word!r} ({dataset} classes: {', '.join(classes)})"
            )
        if key in first_line:
            raise DataError(f"{path}:{line_no}: clip {key} is listed twice (first on line {first_line[key]})")
        first_line[key] = line_no
        rows.append((line_no, key, label))
    return rows

"""The dataset registry: one name per dataset, its canonical classes, and `load_split` that calls its reader.

Datasets, what `root` is, folds, and the options `load_split` passes on (defaults in brackets):

- dfew: the DFEW folder (EmoLabel_DataSplit/, Clip/); folds 1..5; source ["frames"] or "video".
- synthetic: a SynthDFER folder, written in DFEW's layout and read by the DFEW reader; fold 1 only; source.
- ferv39k: the FERV39K folder (4_setups/, 2_ClipsforFaceCrop/); one split (fold 1); source ["frames"] only.
- mafw: the MAFW folder; folds 1..5; split_dir ["split"], source ["video"] or "frames",
  clips_dir ["data/clips"], frames_dir ["data/frames"].
- manifest: the train manifest CSV, or a folder holding train.csv and test.csv; fold 1; test_manifest,
  classes.

Manifest files: the train split is `root` itself (or `root/train.csv` when `root` is a folder). The test
split is the option `test_manifest` when given; otherwise the file beside the train manifest whose name has
its last "train" replaced by "test" (train.csv -> test.csv, faces_train.csv -> faces_test.csv). Without the
option `classes`, both splits use the classes of the train manifest, so that a class absent from the test
file does not shift the labels.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from rdfer.data.dfew import read_dfew
from rdfer.data.ferv39k import read_ferv39k
from rdfer.data.mafw import read_mafw
from rdfer.data.manifest import read_manifest
from rdfer.data.records import DataError, Split
from rdfer.errors import ConfigError

DATASETS: tuple[str, ...] = ("dfew", "ferv39k", "mafw", "manifest", "synthetic")
SPLITS = ("train", "test")

_FOLDS = {"dfew": 5, "mafw": 5, "synthetic": 1, "ferv39k": 1, "manifest": 1}
_OPTIONS = {
    "dfew": {"source"},
    "synthetic": {"source"},
    "ferv39k": {"source"},
    "mafw": {"split_dir", "source", "clips_dir", "frames_dir"},
    "manifest": {"test_manifest", "classes"},
}


def num_folds(dataset: str) -> int:
    """How many official folds a dataset has (1 for a single official split)."""
    _check_dataset(dataset)
    return _FOLDS[dataset]


def load_split(dataset: str, root: str | os.PathLike, split: str, fold: int = 1, **options: Any) -> Split:
    """Read the `split` ("train" or "test") of `fold` of `dataset` under `root`; options as listed above."""
    _check_dataset(dataset)
    unknown = sorted(set(options) - _OPTIONS[dataset])
    if unknown:
        raise ConfigError(
            f"dataset {dataset!r} takes no option {', '.join(unknown)} "
            f"(its options: {', '.join(sorted(_OPTIONS[dataset]))})"
        )
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    folds = _FOLDS[dataset]
    if not (isinstance(fold, int) and 1 <= fold <= folds):
        allowed = "fold 1 only (one official split)" if folds == 1 else f"folds 1..{folds}"
        raise ConfigError(f"{root}: {dataset} has {allowed}, not fold {fold!r}")
    if dataset == "dfew":
        return read_dfew(root, split, fold, **options)
    if dataset == "synthetic":
        return dataclasses.replace(read_dfew(root, split, fold, **options), dataset="synthetic")
    if dataset == "ferv39k":
        return read_ferv39k(root, split, **options)
    if dataset == "mafw":
        return read_mafw(root, split, fold, **options)
    return _load_manifest(Path(root), split, options.get("test_manifest"), options.get("classes"))


def manifest_files(
    root: str | os.PathLike, test_manifest: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """(train manifest, test manifest) by the naming rule in this module's docstring."""
    root = Path(root)
    train = root / "train.csv" if root.is_dir() else root
    if test_manifest is not None:
        return train, Path(test_manifest)
    stem, cut, tail = train.name.rpartition("train")
    if not cut:
        raise DataError(
            f"{train}: cannot name the test manifest (the file name has no 'train' to replace "
            "by 'test'); pass test_manifest (--test-manifest)"
        )
    return train, train.with_name(stem + "test" + tail)


def _load_manifest(root: Path, split: str, test_manifest: Any, classes: Any) -> Split:
    train, test = manifest_files(root, test_manifest)
    if split == "train":
        read = read_manifest(train, classes, split)
        if classes is None:
            _warn_rare_classes(read, train)
        return read
    if classes is None:
        if not test.is_file():  # name the file the caller asked for, not the train file read for its classes
            raise DataError(f"{test}: manifest file not found")
        classes = read_manifest(train).classes
    return read_manifest(test, classes, split)


def _warn_rare_classes(split: Split, path: Path) -> None:
    """Classes taken from a manifest's words: one with under 1% of the clips is likely a typo of another."""
    counts = dict(zip(split.classes, split.class_counts(), strict=True))
    rare = [f"{name!r} ({n} clips)" for name, n in counts.items() if n < 0.01 * len(split)]
    if rare:
        print(
            f"warning: {path}: classes with under 1% of the {len(split)} clips: {', '.join(rare)}; a typo? "
            "data.options={classes: [...]} fixes the class list (and then refuses a label outside it)",
            file=sys.stderr,
        )


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")

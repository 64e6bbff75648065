"""`python -m rdfer.data summary`: clips per split and per class of a dataset, as JSON on stdout.

With --verify it also opens every clip (its frame images or its video) and lists every problem found, not only
the first, with a one-line total on stderr; the exit code is then 1 when there is any problem. A bad split
file is an error naming the file and the problem (exit code 1). When the installed NVIDIA DALI is built for
another CUDA than torch, a line on stderr names both and the extra to install (rdfer.data.dali_build).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from rdfer.data.dali_build import check as check_dali
from rdfer.data.datasets import DATASETS, SPLITS, load_split
from rdfer.data.records import ClipRecord, Split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument(
        "--root",
        required=True,
        type=Path,
        help="the dataset folder; for manifest, the train manifest CSV (or a folder with "
        "train.csv and test.csv)",
    )
    parser.add_argument("--fold", type=int, default=1, help="official fold: 1..5 for dfew and mafw, else 1")
    parser.add_argument(
        "--source",
        choices=("frames", "video"),
        default=None,
        help="read clips as frame folders or video files (default: video for mafw, frames "
        "for the others; not used by manifest, whose paths say it)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="open every clip's frames or video and list every problem found"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="threads that open clips during --verify (default: CPU count)",
    )
    parser.add_argument(
        "--mafw-split-dir",
        default=None,
        help="mafw: the folder under --root (or absolute) holding single/no_caption/set_K/ (default: split)",
    )
    parser.add_argument(
        "--test-manifest",
        type=Path,
        default=None,
        help="manifest: the test manifest CSV (default: the train manifest's name with "
        "'train' replaced by 'test')",
    )


def run(args: argparse.Namespace) -> int:
    options: dict[str, object] = {}
    if args.source is not None:
        options["source"] = args.source
    if args.mafw_split_dir is not None:
        options["split_dir"] = args.mafw_split_dir
    if args.test_manifest is not None:
        options["test_manifest"] = args.test_manifest
    splits = {name: load_split(args.dataset, args.root, name, args.fold, **options) for name in SPLITS}
    report: dict[str, object] = {
        "dataset": args.dataset,
        "root": str(args.root),
        "fold": args.fold,
        "classes": list(splits["train"].classes),
        "splits": {name: _counts(split) for name, split in splits.items()},
    }
    if args.verify:
        progress = not args.no_progress and sys.stderr.isatty()
        report["problems"] = problems = verify_splits(splits, workers=args.workers, progress=progress)
        clips = sum(len(s) for s in splits.values())
        bad = len({(p["split"], p["key"]) for p in problems})
        print(f"verify: {clips} clips checked, {len(problems)} problems in {bad} clips", file=sys.stderr)
    print(json.dumps(report, indent=2))
    dali = check_dali()
    if dali:  # on stderr: stdout stays the JSON report
        print(f"summary: {dali}", file=sys.stderr)
    return 1 if report.get("problems") else 0


def verify_splits(
    splits: dict[str, Split], workers: int = 1, whole: bool = True, progress: bool = True
) -> list[dict[str, str]]:
    """Every problem of every clip, as {"split", "key", "path", "problem"}, in split then record order.
    `whole`: decode every frame and video (else the quick check of rdfer.data.frames.verify_record)."""
    # Imported here: frames.py holds the decoders, which a plain summary does not need.
    from rdfer.data.frames import verify_record

    def check(record: ClipRecord) -> list[str]:
        try:
            return verify_record(record, whole)
        except Exception as e:  # noqa: BLE001 - one clip that breaks the checker must not hide the others
            return [f"could not be checked: {type(e).__name__}: {e}"]

    jobs = [(name, r) for name, split in splits.items() for r in split.records]
    problems: list[dict[str, str]] = []
    # Threads: image and video decoding release the GIL; map keeps the records' order.
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(
            total=len(jobs),
            desc="verify" if whole else "checking frames",
            unit="clip",
            file=sys.stderr,
            disable=not progress,
            leave=whole,
        ) as bar,
    ):
        for (name, record), found in zip(jobs, pool.map(check, (r for _, r in jobs)), strict=False):
            problems += [
                {"split": name, "key": record.key, "path": str(record.path), "problem": p} for p in found
            ]
            bar.update()
    return problems


def _counts(split: Split) -> dict[str, object]:
    return {"clips": len(split), "per_class": dict(zip(split.classes, split.class_counts(), strict=False))}

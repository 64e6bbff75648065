"""python -m rdfer.review RUN_DIR [--top N] [--out review.html]: a page of a training run's suspect labels.

The suspects are the rows of the run's noisy_samples.csv (its selector's noisy category, read from last.pt),
highest noise score first. One self-contained HTML file (images inlined: it opens from disk, can be mailed):
per clip its frames, given label, the class the network sees, noise score and per-epoch predictions; filters
by given label and seen class; on SynthDFER runs, whether each suspect is truly noisy, hard or clean.
Frames come from the frame cache the run filled; clips it lacks are decoded (only those).
Exit codes: 0 written; 1 a run or data problem (no last.pt, a split that does not match it); 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rdfer import cli
from rdfer.errors import CheckpointError
from rdfer.progress import progress_bar
from rdfer.review.page import Row, data_uri, render, strip_png
from rdfer.review.suspects import Run, load_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rdfer.review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, help="the run folder (rdfer.train's --out: it holds last.pt)")
    p.add_argument("--top", type=int, default=None, help="only the N highest-scoring suspects (default: all)")
    p.add_argument("--out", type=Path, default=None, help="the HTML file (default: RUN/review.html)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    return p


def truth_of(run: Run, root: Path) -> dict[str, str]:
    """SynthDFER: per training clip key, noisy | hard | clean; other datasets: nothing."""
    if run.config.data.dataset != "synthetic":
        return {}
    from rdfer.data.synth.truth import load_ground_truth

    kinds = {}
    for t in load_ground_truth(root):
        if t.split == "train":
            kinds[t.key] = "noisy" if t.is_noisy else "hard" if t.is_hard else "clean"
    return kinds


def build_rows(run: Run, progress: bool) -> tuple[list[Row], list[str]]:
    from rdfer.data.prepare import load_splits, resolve_root
    from rdfer.models.rdfer_net import RDFER
    from rdfer.review.frames import look

    split = load_splits(run.config.data, progress)[0]
    ids = [s.sample_id for s in run.suspects]
    if len(split) != run.num_samples or any(
        split.records[s.sample_id].label != s.given for s in run.suspects
    ):
        raise CheckpointError(
            f"{run.checkpoint}: its statistics do not fit the training split of its config "
            f"({split.dataset}/{split.name}, {len(split)} clips): was the dataset changed?"
        )
    model = RDFER.from_checkpoint(run.checkpoint)
    looked = look(model, split, ids, progress)
    truth = truth_of(run, resolve_root(run.config.data, progress))
    rows = []
    bar = progress_bar(run.suspects, desc="review: frame strips", enabled=progress, leave=False)
    for k, s in enumerate(bar):
        key = split.records[s.sample_id].key
        strip = data_uri(strip_png(looked.frames[k], looked.synopsis[k], looked.clips[k]))
        rows.append(Row(s, key, strip, truth.get(key) if truth else None))
    notes = [
        f"Run {run.folder} after {run.epochs} epochs; frames of {looked.from_cache} of {len(ids)} suspects "
        "from the frame cache, the others decoded."
    ]
    return rows, notes


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.top is not None and args.top < 1:
        build_parser().error(f"--top must be at least 1, got {args.top}")
    progress = not args.no_progress and sys.stderr.isatty()
    start = time.perf_counter()
    run = load_run(args.run, args.top)
    rows, notes = build_rows(run, progress)
    out = args.out or args.run / "review.html"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(render(rows, run.classes, f"rdfer review: {args.run}", notes), encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a page
    print(f"review: {len(rows)} suspects -> {out} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

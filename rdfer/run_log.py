"""What a run writes in run.out besides checkpoints: the refusal to overwrite another run, metrics.jsonl,
TensorBoard scalars, the epoch line on stderr, and at the end noisy_samples.csv and summary.json."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rdfer.errors import ConfigError
from rdfer.ops.agreement import CATEGORY_NAMES

if TYPE_CHECKING:
    from rdfer.training import Run

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "noisy_samples.csv", "tensorboard")


def check_out(out: Path, resume: bool, overwrite: bool) -> Path:
    """run.out as a writable folder; a folder holding another run only with `overwrite` (or to resume)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out {out} is a file, not a folder: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"run.out {out}: cannot create the folder ({e.strerror}): choose another --out"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"run.out {out}: the folder is not writable: choose another --out")
    previous = [name for name in RUN_FILES if (out / name).exists()]
    if previous and not resume and not overwrite:
        raise ConfigError(
            f"run.out {out} holds another run ({', '.join(previous)}): continue it with --resume, choose "
            "another --out, or pass --overwrite to replace it"
        )
    return out


def start_log(run: Run) -> None:
    """At the first epoch this process logs: a fresh run replaces what another run left in run.out (only now
    that it has an epoch of its own); metrics.jsonl restarts from this run's history."""
    if not run.resumed:
        for name in ("summary.json", "noisy_samples.csv", "best.pt"):
            (run.out / name).unlink(missing_ok=True)
        shutil.rmtree(run.out / "tensorboard", ignore_errors=True)
    with (run.out / "metrics.jsonl").open("w") as f:
        f.writelines(json.dumps(h) + "\n" for h in run.history[:-1])
    run.rewrite_log = False


def log_row(run: Run, row: dict) -> None:
    if run.writer is None:
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(run.out / "tensorboard"))
    for k, v in row.items():
        if isinstance(v, (int, float)) and k != "epoch":
            run.writer.add_scalar(k, v, row["epoch"])
    with (run.out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    shares = " ".join(f"{n}={row['share_' + n]:.2f}" for n in CATEGORY_NAMES)
    test = f" test WAR={row['test_war']:.4f} UAR={row['test_uar']:.4f}" if "test_war" in row else ""
    print(
        f"epoch {row['epoch']}: loss={row['loss']:.4f} train_acc={row['train_acc']:.4f}{test} "
        f"[{shares}] lr={row['lr']:.2e} {row['seconds']:.0f}s",
        file=sys.stderr,
    )
    if len(run.skipped):
        print(run.skipped.summary(), file=sys.stderr)


def finish(run: Run) -> dict:
    """noisy_samples.csv and summary.json (rank 0); the summary is the return value of train()."""
    if not run.world.main:
        return {"rank": run.world.rank}
    records = run.train_split.records
    flagged = run.selector.write_noisy(
        run.out / "noisy_samples.csv",
        [r.key for r in records],
        [r.label for r in records],
        run.train_split.classes,
    )
    evaluated = [h for h in run.history if "test_war" in h]
    best = max(evaluated, key=lambda h: h["test_war"])  # the field's convention: best-WAR epoch, its own UAR
    last = evaluated[-1]

    def pick(h: dict) -> dict:
        return {"epoch": h["epoch"], "war": h["test_war"], "uar": h["test_uar"]}

    summary = {
        "best_war_epoch": pick(best),
        "last_epoch": pick(last),
        "noisy_flagged": flagged,
        "out": str(run.out),
        "history": run.history,
    }
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

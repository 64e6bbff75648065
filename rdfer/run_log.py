"""What a run writes in run.out besides checkpoints: the lock and the refusal to overwrite another run,
metrics.jsonl, TensorBoard scalars, the epoch line on stderr, and at the end noisy_samples.csv and
summary.json. `best_row` is the one rule for the best epoch, used by best.pt and the summary."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rdfer import stopping
from rdfer.errors import ConfigError
from rdfer.files import remove_temporaries, write_atomically
from rdfer.ops.agreement import CATEGORY_NAMES
from rdfer.run_lock import OutLock, hold

if TYPE_CHECKING:
    from rdfer.training import Run

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "noisy_samples.csv", "tensorboard")


def check_out(out: Path, resume: bool, overwrite: bool, lock: bool = True) -> OutLock:
    """run.out as a writable folder, locked for this run (with `lock`: rank 0's part); a folder holding
    another run only with `overwrite` (or to resume). The temporary files that a killed run left go."""
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
    held = hold(out) if lock else OutLock(None)  # first: the checks below see no other run's writes
    previous = [name for name in RUN_FILES if (out / name).exists()]
    if previous and not resume and not overwrite:
        held.release()
        raise ConfigError(
            f"run.out {out} holds another run ({', '.join(previous)}): continue it with --resume, choose "
            "another --out, or pass --overwrite to replace it"
        )
    if lock:
        remove_temporaries(out, RUN_FILES)
        (out / "noisy_samples.tmp").unlink(missing_ok=True)  # the selector's own temporary name
    return held


def best_row(history: list[dict]) -> dict | None:
    """The evaluated epoch with the highest test WAR, the first of tied ones (the field's convention: the
    best-WAR epoch, reported with its own UAR); None before any evaluation."""
    evaluated = [h for h in history if "test_war" in h]
    return max(evaluated, key=lambda h: h["test_war"]) if evaluated else None  # max keeps the first


def start_log(run: Run) -> None:
    """At the first epoch this process logs: a fresh run replaces what another run left in run.out (only now
    that it has an epoch of its own); metrics.jsonl restarts from this run's history. A resumed run's old
    summary.json and noisy_samples.csv go too: they describe an end that is no longer the last epoch."""
    for name in ("summary.json", "noisy_samples.csv", *(() if run.resumed else ("best.pt",))):
        (run.out / name).unlink(missing_ok=True)
    if not run.resumed:
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
    with stopping.deferred():  # a stop here leaves both files or neither
        return _finish(run)


def _finish(run: Run) -> dict:
    records = run.train_split.records
    flagged = run.selector.write_noisy(
        run.out / "noisy_samples.csv",
        [r.key for r in records],
        [r.label for r in records],
        run.train_split.classes,
    )
    best = best_row(run.history)
    last = [h for h in run.history if "test_war" in h][-1]

    def pick(h: dict) -> dict:
        return {"epoch": h["epoch"], "war": h["test_war"], "uar": h["test_uar"]}

    summary = {
        "best_war_epoch": pick(best),
        "last_epoch": pick(last),
        "noisy_flagged": flagged,
        "out": str(run.out),
        "history": run.history,
    }
    write_atomically(run.out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary

"""What a run writes in run.out besides checkpoints: the lock and the refusal to overwrite another run
(`check_out`), metrics.jsonl, TensorBoard scalars and the epoch line on stderr (`RunLog`), and at the end
noisy_samples.csv and summary.json (`finish`). `best_row` is the one rule for the best epoch, used by best.pt,
resume and the summary."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from rdfer import stopping
from rdfer.data.records import Split
from rdfer.errors import ConfigError
from rdfer.files import remove_temporaries, write_atomically
from rdfer.robust.categories import CATEGORY_NAMES
from rdfer.robust.selector import Selector
from rdfer.run_lock import OutLock, hold

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


class RunLog:
    """metrics.jsonl, the TensorBoard scalars and the epoch line of one run, written by rank 0.

    The first write starts the log: a fresh run removes what another run left in run.out (only now that it has
    an epoch of its own), a resumed run its old summary.json and noisy_samples.csv (they describe an end that
    is no longer the last epoch); metrics.jsonl restarts from the history before the row."""

    def __init__(self, out: Path, resumed: bool):
        self.out, self.resumed = out, resumed
        self.started = False
        self.writer = None  # TensorBoard's, made at the first write

    def write(self, row: dict, history: list[dict]) -> None:
        """Log `row`, the last entry of `history`."""
        if not self.started:
            self._start(history[:-1])
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self.writer.add_scalar(k, v, row["epoch"])
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        shares = " ".join(f"{n}={row['share_' + n]:.2f}" for n in CATEGORY_NAMES)
        test = f" test WAR={row['test_war']:.4f} UAR={row['test_uar']:.4f}" if "test_war" in row else ""
        print(
            f"epoch {row['epoch']}: loss={row['loss']:.4f} train_acc={row['train_acc']:.4f}{test} "
            f"[{shares}] lr={row['lr']:.2e} {row['seconds']:.0f}s",
            file=sys.stderr,
        )

    def _start(self, earlier: list[dict]) -> None:
        for name in ("summary.json", "noisy_samples.csv", *(() if self.resumed else ("best.pt",))):
            (self.out / name).unlink(missing_ok=True)
        if not self.resumed:
            shutil.rmtree(self.out / "tensorboard", ignore_errors=True)
        with (self.out / "metrics.jsonl").open("w") as f:
            f.writelines(json.dumps(h) + "\n" for h in earlier)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.out / "tensorboard"))
        self.started = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def finish(out: Path, history: list[dict], selector: Selector, train_split: Split) -> dict:
    """noisy_samples.csv and summary.json (rank 0); the summary is the return value of train()."""
    with stopping.deferred():  # a stop here leaves both files or neither
        records = train_split.records
        flagged = selector.write_noisy(
            out / "noisy_samples.csv",
            [r.key for r in records],
            [r.label for r in records],
            train_split.classes,
        )
        return _summary(out, history, flagged)


def _summary(out: Path, history: list[dict], flagged: int) -> dict:
    best = best_row(history)
    last = [h for h in history if "test_war" in h][-1]

    def pick(h: dict) -> dict:
        return {"epoch": h["epoch"], "war": h["test_war"], "uar": h["test_uar"]}

    summary = {
        "best_war_epoch": pick(best),
        "last_epoch": pick(last),
        "noisy_flagged": flagged,
        "out": str(out),
        "history": history,
    }
    write_atomically(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary

"""Resuming a run from its last.pt: the same config (but the keys RESUME_MAY_CHANGE), weights, optimiser,
schedule, selector, random state and history; and the repair of a best.pt that a killed run left behind."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rdfer import checkpoint, runtime
from rdfer.config import diff, from_dict
from rdfer.errors import CheckpointError, ConfigError
from rdfer.optimization import lr_lambda
from rdfer.run_log import best_row

if TYPE_CHECKING:
    from rdfer.training import Run

RESUME_MAY_CHANGE = ("optim.epochs", "data.cache", "data.loader", "data.workers")


def restore(run: Run, path: Path) -> None:
    """Continue from a checkpoint of the same config: exactly under the same single process, else with the
    same schedule, memory and weights and fresh per-rank randomness. A larger optim.epochs extends the run:
    the learning rate then falls by a cosine from where it was to optim.min_lr over the added steps."""
    state = checkpoint.load(path, for_training=True)
    before = from_dict(state["config"])
    changed = [d for d in diff(before, run.cfg) if d.split(":")[0] not in RESUME_MAY_CHANGE]
    if changed:
        raise ConfigError(
            f"{path} was made with another config; differing keys: "
            + "; ".join(changed)
            + f" (a resumed run may change only {', '.join(RESUME_MAY_CHANGE)})"
        )
    done = state["epoch"] + 1
    if run.cfg.optim.epochs < done:
        raise ConfigError(
            f"{path} has trained {done} epochs already: optim.epochs ({run.cfg.optim.epochs}) "
            "must be at least that to resume it"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.selector = run.make_selector(before.robust, len(run.train_split), before.optim.epochs, run.device)
    run.selector.load_state_dict(state["selector"])
    run.epoch, run.step, run.history, run.resumed = done, state["step"], state["history"], True
    if run.cfg.optim.epochs != before.optim.epochs:
        reached = lr_lambda(before, run.steps_per_epoch)(run.step)
        run.scheduler.lr_lambdas[0] = lr_lambda(run.cfg, run.steps_per_epoch, restart=(run.step, reached))
    if state.get("world", 1) == run.world.size == 1:
        runtime.set_rng_state(state["rng"])
    else:
        runtime.seed_everything(run.cfg.run.seed + 1000 * run.epoch + run.world.rank)
    if run.world.main:
        print(f"resumed from {path} at epoch {run.epoch + 1}", file=sys.stderr)
        repair_best(run, state)


def repair_best(run: Run, state: dict) -> None:
    """best.pt as the history names it. A run killed (SIGKILL, power) after last.pt and before best.pt
    reached the disk leaves an older best.pt, or none: rewritten here from last.pt's weights when last.pt's
    epoch is the best one (the only case such a kill can leave; a signal waits for both files)."""
    best = best_row(state["history"])
    if best is None:
        return
    path = run.out / "best.pt"
    try:
        held = checkpoint.load(path)["epoch"] + 1 if path.exists() else None
    except CheckpointError:
        held = None  # unreadable: rewritten like a missing one
    if held == best["epoch"]:
        return
    if best["epoch"] != state["epoch"] + 1:
        print(
            f"warning: {path} is not the best epoch's ({best['epoch']}) and cannot be rebuilt",
            file=sys.stderr,
        )
        return
    checkpoint.save(path, {k: state[k] for k in checkpoint.BEST_KEYS})
    print(
        f"wrote {path} (epoch {best['epoch']}, the best so far), which the run's stop had prevented",
        file=sys.stderr,
    )

"""Resuming a run from its last.pt: the same config (but the keys RESUME_MAY_CHANGE), weights, optimiser,
schedule, selector, random state and history; and the repair of a best.pt that a killed run left behind.

`read` checks the checkpoint against the run's config before anything is built, so that the run is built
for it: the selector keeps the epochs it was planned for (`planned`), the schedule falls from where it was
(`lr_schedule`). `restore` then loads the state into what was built and returns where the run stands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rdfer import checkpoint, distributed, runtime
from rdfer.config import Config, diff, from_dict
from rdfer.errors import CheckpointError, ConfigError
from rdfer.optimization import lr_lambda
from rdfer.robust.selector import Selector
from rdfer.run_log import best_row

RESUME_MAY_CHANGE = ("optim.epochs", "data.cache", "data.loader", "data.workers")


@dataclass(frozen=True)
class Start:
    """A checkpoint to continue, checked against the run's config."""

    path: Path
    state: dict
    config: Config  # the one it was made with


@dataclass(frozen=True)
class Position:
    """Where a restored run continues."""

    epoch: int  # the next epoch to run, 0-based
    step: int  # optimiser steps taken
    history: list[dict]


def read(path: Path, cfg: Config) -> Start:
    """The checkpoint at `path`, refused unless it was made with cfg (but RESUME_MAY_CHANGE) and cfg's
    optim.epochs reaches its epoch."""
    state = checkpoint.load(path, for_training=True)
    before = from_dict(state["config"])
    changed = [d for d in diff(before, cfg) if d.split(":")[0] not in RESUME_MAY_CHANGE]
    if changed:
        raise ConfigError(
            f"{path} was made with another config; differing keys: "
            + "; ".join(changed)
            + f" (a resumed run may change only {', '.join(RESUME_MAY_CHANGE)})"
        )
    done = state["epoch"] + 1
    if cfg.optim.epochs < done:
        raise ConfigError(
            f"{path} has trained {done} epochs already: optim.epochs ({cfg.optim.epochs}) must be at least "
            "that to resume it"
        )
    return Start(path, state, before)


def planned(cfg: Config, start: Start | None) -> Config:
    """The config a run's selector is built for: a resumed run's selector keeps the epochs it started with
    (its warm-up is a share of them), even when optim.epochs extends the run."""
    return cfg if start is None else start.config


def lr_schedule(cfg: Config, steps_per_epoch: int, start: Start | None) -> Callable[[int], float]:
    """The learning-rate factor per step. A larger optim.epochs extends a resumed run: the rate then falls by
    a cosine from where it was to optim.min_lr over the added steps."""
    if start is None or start.config.optim.epochs == cfg.optim.epochs:
        return lr_lambda(cfg.optim, steps_per_epoch)
    step = start.state["step"]
    reached = lr_lambda(start.config.optim, steps_per_epoch)(step)
    return lr_lambda(cfg.optim, steps_per_epoch, restart=(step, reached))


def restore(
    start: Start,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    selector: Selector,
    world: distributed.World,
    seed: int,
    out: Path,
) -> Position:
    """Load the checkpoint into what the run built: exactly under the same single process, else with the same
    schedule, memory and weights and fresh per-rank randomness. Returns where the run continues."""
    state = start.state
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    selector.load_state_dict(state["selector"])
    position = Position(state["epoch"] + 1, state["step"], state["history"])
    if state.get("world", 1) == world.size == 1:
        runtime.set_rng_state(state["rng"])
    else:
        runtime.seed_everything(seed + 1000 * position.epoch + world.rank)
    if world.main:
        print(f"resumed from {start.path} at epoch {position.epoch + 1}", file=sys.stderr)
        repair_best(out, state)
    return position


def repair_best(out: Path, state: dict) -> None:
    """best.pt as the history names it. A run killed (SIGKILL, power) after last.pt and before best.pt
    reached the disk leaves an older best.pt, or none: rewritten here from last.pt's weights when last.pt's
    epoch is the best one (the only case such a kill can leave; a signal waits for both files)."""
    best = best_row(state["history"])
    if best is None:
        return
    path = out / "best.pt"
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

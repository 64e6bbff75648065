"""Resuming a run from its last.pt: the same config (but the keys RESUME_MAY_CHANGE), weights, optimiser,
schedule, selector, random state and history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rdfer import checkpoint, runtime
from rdfer.config import diff, from_dict
from rdfer.errors import ConfigError
from rdfer.optimization import lr_lambda

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

"""The training loop of `python -m rdfer.train`, in the order it runs:

    run = setup(cfg, ...)              data, model, optimiser and agreement memory, on this rank's device
    restore(run, checkpoint)           when resuming: weights, optimiser, schedule, memory, RNG, history
    for each remaining epoch:
        row = train_epoch(run)         steps: forward -> agreement (pure) -> loss -> backward -> update ->
                                       commit the agreement rows (only for a step that was taken)
        row |= test_epoch(run)         every run.eval_every epochs and at the last one
        end_epoch(run, row)            log (rank 0), last.pt, best.pt
    finish(run)                        noisy_samples.csv and summary.json

Under torchrun every process runs this loop on its shard; rank 0 logs and writes. See docs/method.md for
what the agreement, the categories and the weights are.
"""

from __future__ import annotations

import enum
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdfer import checkpoint, distributed, runtime
from rdfer.config import Config, diff, from_dict
from rdfer.data.loader import SkipReport, set_loader_epoch
from rdfer.data.prepare import build_loader, check_loader, load_splits
from rdfer.data.records import Split
from rdfer.errors import ConfigError, TrainingError
from rdfer.evaluation import evaluate_loader
from rdfer.models import RDFER
from rdfer.ops.agreement import CATEGORY_NAMES, AgreementParams
from rdfer.robust.loss import rdfer_loss
from rdfer.robust.memory import AgreementMemory, agreement_params


class Step(enum.IntEnum):
    """What became of one step. The largest over the ranks decides, so all ranks skip a step together."""

    TAKEN = 0
    EMPTY = 1  # every clip of the batch was unreadable (data.skip_bad)
    NONFINITE = 2  # the loss was not finite: no update, no trace in the memory


class _Interrupted(Exception):
    """Raised by the stop_after_steps test hook: the run ends as if killed, writing nothing more."""


@dataclass
class Run:
    """Everything one training run holds; a checkpoint is its state at the end of an epoch."""

    cfg: Config
    world: distributed.World
    device: torch.device
    out: Path
    train_split: Split
    model: RDFER  # the module that is checkpointed
    step_model: torch.nn.Module  # what a step calls: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    memory: AgreementMemory
    params: AgreementParams
    train_loader: object
    test_loader: object
    progress: bool
    writer: object = None
    epoch: int = 0  # the next epoch to run, 0-based
    step: int = 0  # optimiser steps taken
    history: list[dict] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)  # this epoch's unreadable training clips
    bad_in_a_row: int = 0
    stop_after_steps: int | None = None

    @property
    def warmup_epochs(self) -> int:
        return round(self.cfg.robust.warmup * self.cfg.optim.epochs)


def train(
    cfg: Config,
    *,
    splits: tuple[Split, Split] | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> dict:
    """Train one fold; returns the summary (also written to run.out/summary.json).

    `splits` (train, test) replaces the ones cfg.data names, e.g. a split with labels changed in memory
    (rdfer.experiments.noise); the config's other data settings still apply. Under torchrun every process
    calls this; rank 0 logs, writes checkpoints and returns the summary."""
    world, device = distributed.init(cfg.run.device)
    try:
        run = setup(cfg, world, device, splits, progress and world.main)
        run.stop_after_steps = stop_after_steps
        if resume is not None:
            restore(run, Path(resume))
        elif world.main:
            (run.out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
        try:
            for epoch in range(run.epoch, cfg.optim.epochs):
                run.epoch = epoch
                row = train_epoch(run)
                row.update(test_epoch(run))
                end_epoch(run, row)
        except _Interrupted:
            return {"interrupted_at_step": run.step}
        finally:
            if run.writer is not None:
                run.writer.close()
        return finish(run)
    finally:
        distributed.shutdown(world)


# ----------------------------------------------------------------------------------------------------- setup


def setup(cfg: Config, world: distributed.World, device: torch.device, splits, progress: bool) -> Run:
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.data.batch_size % world.size:
        raise ConfigError(
            f"data.batch_size ({cfg.data.batch_size}) is the global batch: it must divide by the "
            f"number of processes ({world.size})"
        )
    runtime.seed_everything(cfg.run.seed + world.rank)
    if splits is None:
        splits = load_splits(cfg.data, progress)
    else:
        check_loader(cfg.data)
    train_split, test_split = splits

    model = RDFER(cfg, train_split.classes).to(device)
    if runtime.use_channels_last(device, cfg.run):
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    batch_size = cfg.data.batch_size // world.size
    steps_per_epoch = max(len(train_split) // world.size // batch_size, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
    # Rank 0's BatchNorm statistics are broadcast before evaluation instead of at every forward, so a forward
    # holds no collective and a rank with an empty batch can sit a step out with the others.
    step_model = model
    if world.distributed:
        ids = [device] if device.type == "cuda" else None
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    train_loader, test_loader = _loaders(cfg, world, device, train_split, test_split, batch_size, progress)
    writer = None
    if world.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    memory = AgreementMemory(len(train_split), device)
    return Run(cfg, world, device, out, train_split, model, step_model, optimizer, scheduler, memory,
               agreement_params(cfg.robust), train_loader, test_loader, progress, writer)  # fmt: skip


def _loaders(cfg: Config, world, device, train_split: Split, test_split: Split, batch_size: int, progress):
    args = dict(batch_size=batch_size, seed=cfg.run.seed, device=device, notice=world.main, progress=progress)
    augment = {"scale": (cfg.data.crop_scale, 1.0), "jitter": cfg.data.color_jitter}
    shard = distributed.ShardedEpochSampler(len(train_split), cfg.run.seed, world) if world.distributed else None
    train = build_loader(train_split, cfg.data, train=True, augment=augment, sampler=shard, **args)
    test_shard = distributed.eval_shard(len(test_split), world) if world.distributed else None
    test = build_loader(test_split, cfg.data, train=False, sampler=test_shard, **args)
    return train, test


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(cfg: Config, steps_per_epoch: int):
    """Per-iteration linear warm-up, then cosine down to min_lr, as a factor of optim.lr."""
    o = cfg.optim
    total = o.epochs * steps_per_epoch
    warm = int(o.warmup_epochs * steps_per_epoch)
    floor = o.min_lr / o.lr

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(total - warm, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def restore(run: Run, path: Path) -> None:
    """Continue from a checkpoint of the same config: exactly under the same single process, else with the
    same schedule, memory and weights and fresh per-rank randomness."""
    state = checkpoint.load(path, for_training=True)
    changed = diff(from_dict(state["config"]), run.cfg)
    if changed:
        raise ConfigError(f"{path} was made with another config; differing keys:\n  " + "\n  ".join(changed))
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.memory.load_state_dict(state["memory"])
    run.epoch, run.step, run.history = state["epoch"] + 1, state["step"], state["history"]
    if state.get("world", 1) == run.world.size == 1:
        runtime.set_rng_state(state["rng"])
    else:
        runtime.seed_everything(run.cfg.run.seed + 1000 * run.epoch + run.world.rank)
    if run.world.main:
        print(f"resumed from {path} at epoch {run.epoch + 1}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------- epochs


def train_epoch(run: Run) -> dict:
    """One pass over this rank's shard; returns the epoch's log row (reduced over the ranks)."""
    cfg, epoch = run.cfg, run.epoch
    set_loader_epoch(run.train_loader, epoch)
    warm = cfg.robust.enabled and epoch >= run.warmup_epochs
    run.step_model.train()
    run.skipped = SkipReport()
    sums = torch.zeros(3, device=run.device)  # loss sum, correct, samples
    categories = torch.zeros(3, device=run.device)
    nonfinite = 0
    t0 = time.perf_counter()
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not run.progress,
               leave=False, dynamic_ncols=True)  # fmt: skip
    for batch in bar:
        if run.stop_after_steps is not None and run.step >= run.stop_after_steps:
            raise _Interrupted
        run.skipped.add(batch)
        outcome = train_step(run, batch, warm, sums, categories)
        if outcome is Step.NONFINITE:
            nonfinite += 1
            run.bad_in_a_row += 1
            if run.bad_in_a_row >= cfg.optim.max_bad_steps:
                raise TrainingError(
                    f"{run.bad_in_a_row} steps in a row had a non-finite loss (last at epoch {epoch + 1}, "
                    f"step {run.step}); stopping. Lower optim.lr, set optim.grad_clip, or check the data. "
                    f"The last complete checkpoint is {run.out / 'last.pt'}"
                )
        elif outcome is Step.TAKEN:
            run.bad_in_a_row = 0
    loss_sum, correct, seen = distributed.all_reduce_sum(sums, run.world).tolist()
    categories = distributed.all_reduce_sum(categories, run.world)
    return {
        "epoch": epoch + 1,
        "loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "lr": run.scheduler.get_last_lr()[0],
        "warm": warm,
        "nonfinite_steps": nonfinite,
        "skipped_train_clips": len(distributed.gather_objects(run.skipped.entries, run.world)),
        "seconds": time.perf_counter() - t0,
        **{f"share_{name}": c / max(seen, 1) for name, c in zip(CATEGORY_NAMES, categories.tolist())},
    }


def train_step(run: Run, batch: dict, warm: bool, sums: torch.Tensor, categories: torch.Tensor) -> Step:
    """Forward, the batch's agreement (read from the memory, not written), the weighted loss; then, if every
    rank has a finite loss, backward, update and commit the agreement rows."""
    cfg, device = run.cfg, run.device
    outcome, assessed = Step.EMPTY, None
    if batch["frames"].shape[0]:
        frames = batch["frames"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        ids = batch["sample_id"].to(device, non_blocking=True)
        with runtime.autocast(device, cfg.run):
            result = run.step_model(frames)
        assessed = run.memory.assess(result["detail_instance_logits"], labels, ids, run.params, warm)
        loss, _ = rdfer_loss(result, assessed.target, assessed.weight, cfg.optim, cfg.data.num_frames)
        outcome = Step.TAKEN if torch.isfinite(loss) else Step.NONFINITE
    outcome = Step(distributed.all_max(int(outcome), run.world, device))
    if outcome is not Step.TAKEN:
        return outcome
    run.memory.commit(ids, assessed)
    if run.world.distributed:
        batch_size = cfg.data.batch_size // run.world.size
        run.memory.merge(*distributed.all_gather_rows(ids, run.memory.rows(ids), batch_size, run.world))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    n = labels.numel()
    correct = (result["logits"].argmax(-1) == labels).sum()
    sums += torch.stack([loss.detach() * n, correct, torch.tensor(n, device=device)])
    categories += torch.bincount(assessed.category, minlength=3)[:3]
    return Step.TAKEN


def test_epoch(run: Run) -> dict:
    """Test WAR/UAR every run.eval_every epochs and at the last epoch; {} otherwise."""
    cfg, epoch = run.cfg, run.epoch
    if (epoch + 1) % cfg.run.eval_every and epoch + 1 != cfg.optim.epochs:
        return {}
    distributed.broadcast_buffers(run.model, run.world)
    classes = run.train_split.classes
    metrics = evaluate_loader(run.model, run.test_loader, run.device, cfg.run, classes, run.progress, run.world)
    return {"test_war": metrics["war"], "test_uar": metrics["uar"], "skipped_test_clips": len(metrics["skipped"])}


def end_epoch(run: Run, row: dict) -> None:
    """Log the row and write last.pt (and best.pt at the best test WAR so far), on rank 0."""
    run.history.append(row)
    if not run.world.main:
        return
    _log(row, run.writer, run.out, run.skipped)
    cfg = run.cfg
    if cfg.robust.enabled and row["epoch"] == run.warmup_epochs and row["share_noisy"] > 0.5:
        print(
            f"warning: the warm-up ends with {100 * row['share_noisy']:.0f}% of the samples looking noisy: "
            "a model that predicts one class for every clip agrees with itself. Agreement weights from such a "
            "model will down-weight most of the data; consider a longer robust.warmup.",
            file=sys.stderr,
        )
    state = {
        "epoch": run.epoch, "step": run.step, "config": cfg.to_dict(), "classes": list(run.model.classes),
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "memory": run.memory.state_dict(),
        "rng": runtime.rng_state(), "history": run.history, "world": run.world.size,
    }  # fmt: skip
    checkpoint.save(run.out / "last.pt", state)
    if "test_war" in row and row["test_war"] >= max(h.get("test_war", -1) for h in run.history):
        checkpoint.save(run.out / "best.pt", {k: state[k] for k in ("epoch", "config", "classes", "model")})


def _log(row: dict, writer, out: Path, skipped: SkipReport) -> None:
    for k, v in row.items():
        if isinstance(v, (int, float)) and k != "epoch":
            writer.add_scalar(k, v, row["epoch"])
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    shares = " ".join(f"{n}={row['share_' + n]:.2f}" for n in CATEGORY_NAMES)
    test = f" test WAR={row['test_war']:.4f} UAR={row['test_uar']:.4f}" if "test_war" in row else ""
    print(
        f"epoch {row['epoch']}: loss={row['loss']:.4f} train_acc={row['train_acc']:.4f}{test} "
        f"[{shares}] lr={row['lr']:.2e} {row['seconds']:.0f}s",
        file=sys.stderr,
    )
    if len(skipped):
        print(skipped.summary(), file=sys.stderr)


def finish(run: Run) -> dict:
    """noisy_samples.csv and summary.json (rank 0); the summary is the return value of train()."""
    if not run.world.main:
        return {"rank": run.world.rank}
    records = run.train_split.records
    flagged = run.memory.write_noisy(run.out / "noisy_samples.csv", [r.key for r in records],
                                     [r.label for r in records], run.train_split.classes)  # fmt: skip
    evaluated = [h for h in run.history if "test_war" in h]
    best = max(evaluated, key=lambda h: h["test_war"])  # the field's convention: best-WAR epoch, its own UAR
    last = evaluated[-1]

    def pick(h: dict) -> dict:
        return {"epoch": h["epoch"], "war": h["test_war"], "uar": h["test_uar"]}

    summary = {"best_war_epoch": pick(best), "last_epoch": pick(last), "noisy_flagged": flagged,
               "out": str(run.out), "history": run.history}  # fmt: skip
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

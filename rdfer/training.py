"""The training loop of `python -m rdfer.train`, in the order it runs:

    start = resume.read(path, cfg)     when resuming: the checkpoint, checked against cfg before anything
                                       is built
    run = setup(cfg, ..., start)       data, model, optimiser, schedule, selector (rdfer.robust), on this
                                       rank's device: the one place a run's selector is built
    resume.restore(start, ...)         when resuming: weights, optimiser, schedule, selector, RNG; returns
                                       the epoch, step and history the loop continues from
    for each remaining epoch:
        row = train_epoch(run)         steps: forward -> selector.assess (pure) -> weighted loss ->
                                       backward -> update -> selector.commit (where the step was
                                       finite); then the selector's end-of-epoch decisions
        row |= test_epoch(run)         every run.eval_every epochs and at the last one
        end_epoch(run, row)            log (rank 0), last.pt, best.pt
    finish(run)                        noisy_samples.csv and summary.json

Under torchrun every process runs this loop on its shard; rank 0 logs and writes. See docs/method.md for
what the agreement, the categories and the weights are.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from rdfer import checkpoint, distributed, environment, runtime, stopping
from rdfer import resume as _resume  # train() has an argument named resume
from rdfer.config import Config
from rdfer.data.loader import SkipReport, set_loader_epoch
from rdfer.data.prepare import build_loader, check_loader, check_splits, load_splits
from rdfer.data.records import Split
from rdfer.errors import ConfigError, DataError, TrainingError, one_line
from rdfer.evaluation import evaluate_loader
from rdfer.models import RDFER
from rdfer.optimization import param_groups
from rdfer.robust.categories import CATEGORY_NAMES
from rdfer.robust.loss import rdfer_loss
from rdfer.robust.selection import make_selector
from rdfer.robust.selector import Selector
from rdfer.run_log import RunLog, best_row, check_out, finish


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
    selector: Selector
    log: RunLog
    train_loader: object = None
    test_loader: object = None
    progress: bool = False
    checkpoints: checkpoint.BackgroundWriter = field(default_factory=checkpoint.BackgroundWriter)
    epoch: int = 0  # the next epoch to run, 0-based
    step: int = 0  # optimiser steps taken
    history: list[dict] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)  # this epoch's unreadable training clips


def train(
    cfg: Config,
    *,
    splits: tuple[Split, Split] | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    make_selector: Callable[..., Selector] | None = None,
    make_model: Callable[..., torch.nn.Module] | None = None,
) -> dict:
    """Train one fold; returns the summary (also written to run.out/summary.json).

    `splits` (train, test) replaces the ones cfg.data names, e.g. a split with labels changed in memory
    (rdfer.experiments.noise); the config's other data settings still apply. A run.out that holds another
    run is refused unless `overwrite` (its files are then replaced as this run writes its own, never before).
    `resume` continues a checkpoint (last.pt); with a larger optim.epochs it extends a run. Under torchrun
    every process calls this; rank 0 logs, writes checkpoints and returns the summary. `make_selector`
    replaces rdfer.robust.selection.make_selector (same arguments), e.g. the noise experiment's oracle;
    `make_model` (config, classes) replaces RDFER, e.g. the architecture experiment's variants."""
    lock = check_out(Path(cfg.run.out), resume is not None, overwrite, lock=distributed.from_env().main)
    try:
        world, device = distributed.init(cfg.run.device)
    except BaseException:
        lock.release()  # e.g. a device that is not here: the folder is free again for the corrected command
        raise
    run = None
    try:
        start = None if resume is None else _resume.read(Path(resume), cfg)
        run = setup(cfg, world, device, splits, progress and world.main, start, make_selector, make_model)
        if start is not None:
            at = _resume.restore(
                start, run.model, run.optimizer, run.scheduler, run.selector, world, cfg.run.seed, run.out
            )
            run.epoch, run.step, run.history = at.epoch, at.step, at.history
        try:
            for epoch in range(run.epoch, cfg.optim.epochs):
                run.epoch = epoch
                row = train_epoch(run)
                try:
                    row.update(test_epoch(run))
                except BaseException:
                    end_epoch(run, row)  # the epoch's training is saved even when its test fails
                    raise
                end_epoch(run, row)
        finally:
            run.checkpoints.wait()  # a run that ends, fails or is interrupted leaves whole checkpoints
            run.log.close()
        if not world.main:
            return {"rank": world.rank}
        return finish(run.out, run.history, run.selector, run.train_split)
    finally:
        run = None  # the DDP model goes before its process group (distributed.shutdown says why)
        distributed.shutdown(world)
        lock.release()


# ----------------------------------------------------------------------------------------------------- setup


def setup(
    cfg: Config,
    world: distributed.World,
    device: torch.device,
    splits,
    progress: bool,
    start: _resume.Start | None = None,
    make: Callable[..., Selector] | None = None,
    make_model: Callable[..., torch.nn.Module] | None = None,
) -> Run:
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
    batch_size = cfg.data.batch_size // world.size
    check_splits(train_split, test_split, batch_size, cfg.data.skip_bad, progress)
    run = learner(cfg, world, device, train_split, progress, start, make, make_model)
    run.train_loader, run.test_loader = _loaders(
        cfg, world, device, train_split, test_split, batch_size, progress
    )
    return run


def learner(
    cfg: Config,
    world: distributed.World,
    device: torch.device,
    train_split: Split,
    progress: bool = False,
    start: _resume.Start | None = None,
    make: Callable[..., Selector] | None = None,
    make_model: Callable[..., torch.nn.Module] | None = None,
) -> Run:
    """A Run without its loaders: the model (channels-last on CUDA), the fused AdamW with its schedule, the
    selector (`make`, default rdfer.robust.selection.make_selector: (robust, num_samples, epochs, device)),
    and the DistributedDataParallel wrapper under torchrun; built for `start` when resuming. Benchmarks build
    their steps on it."""
    model = (make_model or RDFER)(cfg, train_split.classes).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes (the last partial batch is dropped)
    if runtime.use_channels_last(device, cfg.run):
        model = model.to(memory_format=torch.channels_last)
    # Fused: one kernel per step on a GPU, and it skips a step whose found_inf is set without a host sync.
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr, fused=True)
    steps_per_epoch = max(len(train_split) // cfg.data.batch_size, 1)
    schedule = _resume.lr_schedule(cfg, steps_per_epoch, start)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # Rank 0's BatchNorm statistics are broadcast before evaluation instead of at every forward, so a forward
    # holds no collective and a rank with an empty batch can sit a step out with the others.
    step_model = model
    if world.distributed:
        ids = [device] if device.type == "cuda" else None
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    plan = _resume.planned(cfg, start)
    selector = (make or make_selector)(plan.robust, len(train_split), plan.optim.epochs, device)
    out = Path(cfg.run.out)
    return Run(
        cfg,
        world,
        device,
        out,
        train_split,
        model,
        step_model,
        optimizer,
        scheduler,
        selector,
        RunLog(out, resumed=start is not None),
        progress=progress,
    )


def _loaders(cfg: Config, world, device, train_split: Split, test_split: Split, batch_size: int, progress):
    args = dict(batch_size=batch_size, seed=cfg.run.seed, device=device, notice=world.main, progress=progress)
    augment = {"scale": (cfg.data.crop_scale, 1.0), "jitter": cfg.data.color_jitter}
    shard = (
        distributed.ShardedEpochSampler(len(train_split), cfg.run.seed, world) if world.distributed else None
    )
    train = build_loader(train_split, cfg.data, train=True, augment=augment, sampler=shard, **args)
    test_shard = distributed.eval_shard(len(test_split), world) if world.distributed else None
    test = build_loader(test_split, cfg.data, train=False, sampler=test_shard, **args)
    return train, test


# ----------------------------------------------------------------------------------------------------- epochs


def train_epoch(run: Run) -> dict:
    """One pass over this rank's shard; returns the epoch's log row (reduced over the ranks)."""
    cfg, epoch = run.cfg, run.epoch
    set_loader_epoch(run.train_loader, epoch)
    run.step_model.train()
    run.skipped = SkipReport()
    totals = EpochTotals(run.device)
    t0 = time.perf_counter()
    bar = tqdm(
        run.train_loader,
        desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
        disable=not run.progress,
        leave=False,
        dynamic_ncols=True,
    )
    beat = _Heartbeat(enabled=run.world.main and not run.progress)
    try:
        for i, batch in enumerate(bar):
            beat.maybe(f"epoch {epoch + 1}/{cfg.optim.epochs}: batch {i}/{len(run.train_loader)}")
            run.skipped.add(batch)
            train_step(run, batch, totals)
            if run.device.type != "cuda" or i % 25 == 24:  # reading the device costs a sync on a GPU
                totals.check(cfg.optim.max_bad_steps, run)
    except DataError as e:  # an unreadable clip (the loader names it): say how to go on without it
        if cfg.data.skip_bad:
            raise
        raise DataError(
            f"{one_line(e)} (data.skip_bad=true leaves unreadable clips out and lists them)"
        ) from None
    totals.check(cfg.optim.max_bad_steps, run)
    loss_sum, correct, seen, nonfinite, *categories = distributed.all_reduce_sum(
        totals.sums, run.world
    ).tolist()
    notes = run.selector.end_epoch(epoch)
    if run.world.main:
        for message in notes.messages:
            print(message, file=sys.stderr)
    return {
        "epoch": epoch + 1,
        "loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "train_clips": int(seen),
        "lr": run.scheduler.get_last_lr()[0],
        **notes.fields,
        "nonfinite_steps": int(nonfinite),
        "skipped_train_clips": len(distributed.gather_objects(run.skipped.entries, run.world)),
        "seconds": time.perf_counter() - t0,
        **{f"share_{name}": c / max(seen, 1) for name, c in zip(CATEGORY_NAMES, categories, strict=False)},
    }


class EpochTotals:
    """One epoch's running sums, kept on the device and read at its end (and by check): loss sum, correct,
    samples, non-finite steps, then the count of each category; plus the current run of non-finite steps."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(4 + len(CATEGORY_NAMES), device=device)
        self.bad_run = torch.zeros((), device=device)

    def add(self, loss: Tensor, correct: Tensor, n: int, category: Tensor, ok: Tensor) -> None:
        """One step's numbers, counted only where ok (a NaN loss must not reach the sums)."""
        good = torch.stack([loss.detach().float() * n, correct.float(), torch.full_like(self.bad_run, n)])
        self.sums[:3] += torch.where(ok, good, 0.0)
        self.sums[3] += (~ok).float()
        self.sums[4:] += torch.where(ok, F.one_hot(category, len(CATEGORY_NAMES)).sum(0).float(), 0.0)
        self.bad_run = torch.where(ok, 0.0, self.bad_run + 1)

    def check(self, max_bad_steps: int, run: Run) -> None:
        bad = int(self.bad_run)
        if bad >= max_bad_steps:
            raise TrainingError(
                f"{bad} steps in a row had a non-finite loss or gradient (epoch {run.epoch + 1}, step "
                f"{run.step}); stopping. Lower optim.lr, set optim.grad_clip, or check the data. The last "
                f"complete checkpoint is {run.out / 'last.pt'}"
            )


class _Heartbeat:
    """Without progress bars (stderr is not a terminal), a line every RDFER_LOG_SECONDS (default 60) seconds,
    so a log file shows that a long epoch is moving."""

    def __init__(self, enabled: bool):
        self.enabled, self.every = enabled, environment.number("RDFER_LOG_SECONDS", 60)
        self.t0 = self.last = time.perf_counter()

    def maybe(self, text: str) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            print(f"{text} ({now - self.t0:.0f}s)", file=sys.stderr, flush=True)


def train_step(run: Run, batch: dict, totals: EpochTotals) -> None:
    """Forward; the batch's weights from the selector (nothing stored yet); the weighted loss; backward; an
    update that the optimiser skips on the device when the loss or a gradient is not finite; the selector's
    rows committed where the step was good. No host synchronisation: the outcome stays on the device."""
    cfg, device, world = run.cfg, run.device, run.world
    empty = batch["frames"].shape[0] == 0
    if cfg.data.skip_bad and world.distributed:  # a rank with nothing to train on: all ranks sit it out
        empty = bool(distributed.all_max(int(empty), world, device))
    if empty:  # every clip of the batch was unreadable (data.skip_bad), on every rank
        return
    ids = batch["sample_id"]
    if int(ids.min()) < 0 or int(ids.max()) >= len(run.selector):  # on the host, before the copy: free
        raise IndexError(
            f"sample ids must be in [0, {len(run.selector)}): the selector is sized to the split"
        )
    frames = batch["frames"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    ids = ids.to(device, non_blocking=True)
    with runtime.autocast(device, cfg.run):
        # The augmentation params stay on the host: the op copies them. The ids reach only the architecture
        # experiment's clip placements (rdfer.models.placement, its apex oracle).
        result = run.step_model(frames, batch.get("augment"), sample_ids=ids)
    assessed = run.selector.assess(result, labels, ids)
    loss, _ = rdfer_loss(
        result,
        assessed.target,
        assessed.weight,
        cfg.optim,
        cfg.data.num_frames,
        assessed.elr_target,
        assessed.elr_lambda,
        assessed.stream_weight,
    )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ok = _finite_update(run, loss)
    run.optimizer.step()
    run.scheduler.step()
    rows = assessed.rows
    if world.distributed:
        ids, rows = distributed.all_gather_rows(ids, rows, cfg.data.batch_size // world.size, world)
    run.selector.commit(ids, rows, ok)
    run.step += 1
    correct = (result["logits"].argmax(-1) == labels).sum()
    totals.add(loss, correct, labels.numel(), assessed.category, ok)


def _finite_update(run: Run, loss: Tensor) -> Tensor:
    """A device bool: the loss and every gradient (after DDP's all-reduce, so the same on every rank) are
    finite. The fused optimiser reads it as found_inf and leaves the weights and its state alone when not.
    Clips the gradients when optim.grad_clip is set."""
    grads = [p.grad for p in run.model.parameters() if p.grad is not None]
    if run.cfg.optim.grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.optim.grad_clip, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    ok = torch.isfinite(loss.detach()) & torch.isfinite(norm)
    run.optimizer.found_inf = (~ok).float()
    return ok


def test_epoch(run: Run) -> dict:
    """Test WAR/UAR every run.eval_every epochs and at the last epoch; {} otherwise."""
    cfg, epoch = run.cfg, run.epoch
    if (epoch + 1) % cfg.run.eval_every and epoch + 1 != cfg.optim.epochs:
        return {}
    distributed.broadcast_buffers(run.model, run.world)
    classes = run.train_split.classes
    metrics = evaluate_loader(
        run.model, run.test_loader, run.device, cfg.run, classes, run.progress, run.world
    )
    return {
        "test_war": metrics["war"],
        "test_uar": metrics["uar"],
        "skipped_test_clips": len(metrics["skipped"]),
    }


def end_epoch(run: Run, row: dict) -> None:
    """Log the row and write last.pt (and best.pt at the best test WAR so far), on rank 0. Weights that are no
    longer finite stop the run here, before anything of the epoch is written. A stop (rdfer.stopping) waits
    for the epoch's log and both checkpoints: they never disagree."""
    check_finite(run)
    run.history.append(row)
    if not run.world.main:
        return
    with stopping.deferred():
        _write_epoch(run, row)


def _write_epoch(run: Run, row: dict) -> None:
    run.log.write(row, run.history)
    if len(run.skipped):
        print(run.skipped.summary(), file=sys.stderr)
    cfg = run.cfg
    state = {
        "epoch": run.epoch,
        "step": run.step,
        "config": cfg.to_dict(),
        "classes": list(run.model.classes),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "selector": run.selector.state_dict(),
        "rng": runtime.rng_state(),
        "history": run.history,
        "world": run.world.size,
    }
    run.checkpoints.save(run.out / "last.pt", state)
    if best_row(run.history) is row:
        run.checkpoints.save(run.out / "best.pt", {k: state[k] for k in checkpoint.BEST_KEYS})


def check_finite(run: Run) -> None:
    """One device sync per epoch: every weight and BatchNorm statistic must still be finite."""
    tensors = [t for t in (*run.model.parameters(), *run.model.buffers()) if t.is_floating_point()]
    if torch.stack([t.float().abs().sum() for t in tensors]).isfinite().all():
        return
    raise TrainingError(
        f"the weights are no longer finite after epoch {run.epoch + 1} (optim.lr {run.cfg.optim.lr:g} too "
        "high? optim.grad_clip may help); nothing of this epoch was saved, the last complete checkpoint is "
        f"{run.out / 'last.pt'}"
    )

"""python -m rdfer.train: config -> data -> model -> robust training loop -> checkpoints, logs, noisy list.

With no arguments it trains the packaged `quick` config: SynthDFER `quick` (generated once into
~/.cache/rdfer, or $RDFER_CACHE) with the small CPU encoder, on whatever device is there.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdfer import checkpoint, distributed, runtime
from rdfer.config import Config, ConfigError, diff, from_dict, load_config
from rdfer.data.loader import SkipReport, set_loader_epoch
from rdfer.data.prepare import build_loader, check_loader, load_splits
from rdfer.data.records import DataError, Split
from rdfer.evaluate import evaluate_loader
from rdfer.models import RDFER
from rdfer.ops.agreement import CATEGORY_NAMES, AgreementParams
from rdfer.robust.loss import rdfer_loss
from rdfer.robust.memory import AgreementMemory


class TrainingError(RuntimeError):
    pass


class _Interrupted(Exception):
    """Raised by the stop_after_steps test hook: the run ends as if killed, writing nothing."""


def agreement_params(cfg: Config) -> AgreementParams:
    """The robust section's thresholds, as the agreement op takes them (the same names)."""
    return AgreementParams(**{f.name: getattr(cfg.robust, f.name) for f in dataclasses.fields(AgreementParams)})


def lr_lambda(cfg: Config, steps_per_epoch: int):
    """Per-iteration linear warm-up, then cosine down to min_lr (SPEC §4), as a factor of optim.lr."""
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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: Config, *, splits: tuple[Split, Split] | None = None, resume: str | Path | None = None,
          progress: bool = True, stop_after_steps: int | None = None) -> dict:
    """Train one fold. Returns the summary (also written to run.out/summary.json).

    `splits` (train, test) replaces the ones cfg.data names, e.g. a split with labels changed in memory
    (rdfer.experiments.noise); the config's other data settings still apply. Under torchrun every process
    calls this; rank 0 logs, writes checkpoints and returns the summary."""
    world, device = distributed.init(cfg.run.device)
    try:
        return _train(cfg, world, device, splits, resume, progress and world.main, stop_after_steps)
    finally:
        distributed.shutdown(world)


def _train(cfg: Config, world: distributed.World, device: torch.device, splits, resume, progress: bool,
           stop_after_steps: int | None) -> dict:
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.data.batch_size % world.size:
        raise ConfigError(f"data.batch_size ({cfg.data.batch_size}) is the global batch: it must divide by the "
                          f"number of processes ({world.size})")
    batch_size = cfg.data.batch_size // world.size
    runtime.seed_everything(cfg.run.seed + world.rank)
    if splits is None:
        splits = load_splits(cfg.data, progress)
    else:
        check_loader(cfg.data)
    train_split, test_split = splits
    classes = train_split.classes

    raw = RDFER(cfg.model, len(classes), cfg.data.num_frames).to(device)
    if runtime.use_channels_last(device, cfg.run):
        raw = raw.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(raw, cfg.optim.weight_decay), lr=cfg.optim.lr)
    steps_per_epoch = len(train_split) // world.size // batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, max(steps_per_epoch, 1)))
    memory = AgreementMemory(len(train_split), device)
    params = agreement_params(cfg)
    warmup_epochs = round(cfg.robust.warmup * cfg.optim.epochs)

    start_epoch, step, history = 0, 0, []
    if resume is not None:
        state = checkpoint.load(Path(resume))
        changed = diff(from_dict(state["config"]), cfg)
        if changed:
            raise ConfigError(f"{resume} was made with another config; differing keys:\n  " + "\n  ".join(changed))
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        memory.load_state_dict(state["memory"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        if state.get("world", 1) == world.size == 1:
            runtime.set_rng_state(state["rng"])  # exact continuation
        else:  # another number of processes: same schedule, memory and weights, fresh per-rank randomness
            runtime.seed_everything(cfg.run.seed + 1000 * start_epoch + world.rank)
        if world.main:
            print(f"resumed from {resume} at epoch {start_epoch + 1}", file=sys.stderr)
    elif world.main:
        (out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log

    # Rank 0's BatchNorm statistics are broadcast before evaluation instead of at every forward, so a forward
    # holds no collective and a rank with an empty batch can sit a step out with the others.
    model = raw if not world.distributed else torch.nn.parallel.DistributedDataParallel(
        raw, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
    loader_args = dict(batch_size=batch_size, seed=cfg.run.seed, device=device, notice=world.main, progress=progress)
    augment = {"scale": (cfg.data.crop_scale, 1.0), "jitter": cfg.data.color_jitter}
    shard = distributed.ShardedEpochSampler(len(train_split), cfg.run.seed, world) if world.distributed else None
    train_loader = build_loader(train_split, cfg.data, train=True, augment=augment, sampler=shard, **loader_args)
    test_loader = build_loader(test_split, cfg.data, train=False, **loader_args,
                               sampler=distributed.eval_shard(len(test_split), world) if world.distributed else None)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard")) if world.main else None
    bad_in_a_row = 0
    try:
        for epoch in range(start_epoch, cfg.optim.epochs):
            set_loader_epoch(train_loader, epoch)
            warm = cfg.robust.enabled and epoch >= warmup_epochs
            model.train()
            skipped = SkipReport()
            sums = torch.zeros(3, device=device)  # loss sum, correct, samples
            categories = torch.zeros(3, device=device)
            nonfinite = 0
            t0 = time.perf_counter()
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not progress,
                       leave=False, dynamic_ncols=True)
            for batch in bar:
                if stop_after_steps is not None and step >= stop_after_steps:
                    raise _Interrupted
                skipped.add(batch)
                # 0: a step to take; 1: an empty batch (every clip unreadable, skip_bad); 2: a non-finite loss.
                # The largest code over the ranks decides, so all ranks skip a step together.
                code = 1
                if batch["frames"].shape[0]:
                    frames = batch["frames"].to(device, non_blocking=True)
                    labels = batch["label"].to(device, non_blocking=True)
                    ids = batch["sample_id"].to(device, non_blocking=True)
                    with runtime.autocast(device, cfg.run):
                        result = model(frames)
                    before = memory.ema[ids].clone()
                    stats = memory.observe(result["detail_instance_logits"], labels, ids, params, warm)
                    loss, parts = rdfer_loss(result, stats.target, stats.weight, cfg.optim, cfg.data.num_frames)
                    code = 0 if torch.isfinite(loss) else 2
                code = distributed.all_max(code, world, device)
                if code:
                    if batch["frames"].shape[0]:
                        memory.ema[ids] = before  # a skipped step leaves no trace in the memory either
                    if code == 2:
                        bad_in_a_row += 1
                        nonfinite += 1
                        if bad_in_a_row >= cfg.optim.max_bad_steps:
                            raise TrainingError(
                                f"{bad_in_a_row} steps in a row had a non-finite loss (last at epoch {epoch + 1}, "
                                f"step {step}); stopping. Lower optim.lr, set optim.grad_clip, or check the data. "
                                f"The last complete checkpoint is {out / 'last.pt'}")
                    continue
                bad_in_a_row = 0
                if world.distributed:
                    memory.merge(*distributed.all_gather_rows(ids, memory.rows(ids), batch_size, world))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                n = labels.numel()
                sums += torch.stack([loss.detach() * n, (result["logits"].argmax(-1) == labels).sum(),
                                     torch.tensor(n, device=device)])
                categories += torch.bincount(stats.category, minlength=3)[:3]
            loss_sum, correct, seen = distributed.all_reduce_sum(sums, world).tolist()
            categories = distributed.all_reduce_sum(categories, world)
            row = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "lr": scheduler.get_last_lr()[0],
                "warm": warm,
                "nonfinite_steps": nonfinite,
                "skipped_train_clips": len(distributed.gather_objects(skipped.entries, world)),
                "seconds": time.perf_counter() - t0,
                **{f"share_{name}": c / max(seen, 1) for name, c in zip(CATEGORY_NAMES, categories.tolist())},
            }
            if (epoch + 1) % cfg.run.eval_every == 0 or epoch + 1 == cfg.optim.epochs:
                distributed.broadcast_buffers(raw, world)
                metrics = evaluate_loader(raw, test_loader, device, cfg.run, classes, progress, world)
                row.update(test_war=metrics["war"], test_uar=metrics["uar"], skipped_test_clips=len(metrics["skipped"]))
            history.append(row)
            if not world.main:
                continue
            _log(row, writer, out, skipped)
            if cfg.robust.enabled and epoch + 1 == warmup_epochs and row["share_noisy"] > 0.5:
                print(f"warning: the warm-up ends with {100 * row['share_noisy']:.0f}% of the samples looking noisy: "
                      "a model that predicts one class for every clip agrees with itself. Agreement weights "
                      "from such a model will down-weight most of the data; consider a longer robust.warmup.",
                      file=sys.stderr)
            state = {
                "epoch": epoch, "step": step, "config": cfg.to_dict(), "classes": list(classes),
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "memory": memory.state_dict(),
                "rng": runtime.rng_state(), "history": history, "world": world.size,
            }
            checkpoint.save(out / "last.pt", state)
            if "test_war" in row and row["test_war"] >= max(h.get("test_war", -1) for h in history):
                checkpoint.save(out / "best.pt", {k: state[k] for k in ("epoch", "config", "classes", "model")})
    except _Interrupted:
        return {"interrupted_at_step": step}
    finally:
        if writer is not None:
            writer.close()

    if not world.main:
        return {"rank": world.rank}
    flagged = memory.write_noisy(out / "noisy_samples.csv", [r.key for r in train_split.records],
                                 [r.label for r in train_split.records], classes)
    summary = _summary(history, flagged, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _log(row: dict, writer, out: Path, skipped: SkipReport) -> None:
    for k, v in row.items():
        if isinstance(v, (int, float)) and k != "epoch":
            writer.add_scalar(k, v, row["epoch"])
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    shares = " ".join(f"{n}={row['share_' + n]:.2f}" for n in CATEGORY_NAMES)
    test = f" test WAR={row['test_war']:.4f} UAR={row['test_uar']:.4f}" if "test_war" in row else ""
    print(f"epoch {row['epoch']}: loss={row['loss']:.4f} train_acc={row['train_acc']:.4f}{test} "
          f"[{shares}] lr={row['lr']:.2e} {row['seconds']:.0f}s", file=sys.stderr)
    if len(skipped):
        print(skipped.summary(), file=sys.stderr)


def _summary(history: list[dict], flagged: int, out: Path) -> dict:
    evaluated = [h for h in history if "test_war" in h]
    best = max(evaluated, key=lambda h: h["test_war"])  # the field's convention: best-WAR epoch, its own UAR
    last = evaluated[-1]
    pick = lambda h: {"epoch": h["epoch"], "war": h["test_war"], "uar": h["test_uar"]}  # noqa: E731
    return {"best_war_epoch": pick(best), "last_epoch": pick(last), "noisy_flagged": flagged,
            "out": str(out), "history": history}


def parse_folds(text: str) -> list[int]:
    """'1-5' -> [1..5]; '1,3' -> [1, 3]."""
    folds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        folds += list(range(int(lo), int(hi or lo) + 1))
    return folds


def train_folds(cfg: Config, folds: list[int], progress: bool = True) -> dict:
    rows, base = [], Path(cfg.run.out)
    for k in folds:
        fold_cfg = load_config(cfg.to_dict(), [f"data.fold={k}", f"run.out={base / f'fold{k}'}"])
        s = train(fold_cfg, progress=progress)
        rows.append({"fold": k, **{f"best_{m}": s["best_war_epoch"][m] for m in ("war", "uar", "epoch")},
                     **{f"last_{m}": s["last_epoch"][m] for m in ("war", "uar")}})
    keys = ("best_war", "best_uar", "last_war", "last_uar")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    table = ["| fold | best-WAR epoch | WAR | UAR | last WAR | last UAR |", "|---|---|---|---|---|---|"]
    table += [f"| {r['fold']} | {r['best_epoch']} | {100 * r['best_war']:.2f} | {100 * r['best_uar']:.2f} | "
              f"{100 * r['last_war']:.2f} | {100 * r['last_uar']:.2f} |" for r in rows]
    table.append(f"| mean | | {100 * mean['best_war']:.2f} | {100 * mean['best_uar']:.2f} | "
                 f"{100 * mean['last_war']:.2f} | {100 * mean['last_uar']:.2f} |")
    result = {"folds": rows, "mean": mean}
    base.mkdir(parents=True, exist_ok=True)
    (base / "folds.json").write_text(json.dumps(result, indent=2) + "\n")
    (base / "folds.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rdfer.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="quick",
                   help="a YAML file, or a packaged config: quick (default), dfew, ferv39k, mafw")
    p.add_argument("--dataset", help="dfew | ferv39k | mafw | manifest | synthetic")
    p.add_argument("--root", help="dataset root (for manifest: the train CSV)")
    p.add_argument("--fold", type=int, help="fold to train (DFEW, MAFW: 1..5)")
    p.add_argument("--folds", help="several folds in turn, e.g. 1-5; ends with the per-fold and mean table")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="output folder (checkpoints, logs, TensorBoard, noisy_samples.csv)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", nargs="?", const="", default=None,
                   help="resume from a checkpoint (default: OUT/last.pt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value, e.g. optim.lr=1e-4")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    shortcuts = {"dataset": "data.dataset", "root": "data.root", "fold": "data.fold", "epochs": "optim.epochs",
                 "batch_size": "data.batch_size", "device": "run.device", "out": "run.out", "seed": "run.seed"}
    overrides = [f"{key}={getattr(args, name)}" for name, key in shortcuts.items() if getattr(args, name) is not None]
    return load_config(args.config, [*overrides, *args.overrides])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = not args.no_progress and sys.stderr.isatty()
    if args.folds:
        if args.resume is not None:
            print("error: --resume resumes one fold; use --fold K --out DIR/foldK --resume", file=sys.stderr)
            return 2
        train_folds(cfg, parse_folds(args.folds), progress)
        return 0
    resume = None if args.resume is None else (args.resume or Path(cfg.run.out) / "last.pt")
    try:
        summary = train(cfg, resume=resume, progress=progress)
    except (TrainingError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if "best_war_epoch" not in summary:  # not rank 0 of a torchrun job
        return 0
    b, last = summary["best_war_epoch"], summary["last_epoch"]
    print(json.dumps({"best_war_epoch": b, "last_epoch": last, "noisy_flagged": summary["noisy_flagged"],
                      "out": summary["out"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m rdfer.train: config -> data -> model -> robust training loop -> checkpoints, logs, noisy list.

With no arguments it trains the packaged `quick` config: SynthDFER `quick` (generated once into
~/.cache/rdfer, or $RDFER_CACHE) with the small CPU encoder, on whatever device is there. The loop itself is
rdfer.training.train.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rdfer import cli
from rdfer.config import Config, load_config
from rdfer.data.datasets import num_folds
from rdfer.errors import ConfigError
from rdfer.training import train

__all__ = ["build_parser", "config_from_args", "main", "parse_folds", "train", "train_folds"]


def check_folds(cfg: Config, folds: list[int]) -> None:
    """Every fold asked for exists, before the first one trains."""
    n = num_folds(cfg.data.dataset)
    bad = [k for k in folds if not 1 <= k <= n]
    if bad:
        has = "fold 1 only (one official split)" if n == 1 else f"folds 1..{n}"
        raise ConfigError(f"--folds: {cfg.data.dataset} has {has}, not fold {', '.join(map(str, bad))}")


def train_folds(cfg: Config, folds: list[int], progress: bool = True, overwrite: bool = False) -> dict:
    check_folds(cfg, folds)
    rows, base = [], Path(cfg.run.out)
    for k in folds:
        fold_cfg = load_config(cfg.to_dict(), [f"data.fold={k}", f"run.out={base / f'fold{k}'}"])
        s = train(fold_cfg, progress=progress, overwrite=overwrite)
        rows.append(
            {
                "fold": k,
                **{f"best_{m}": s["best_war_epoch"][m] for m in ("war", "uar", "epoch")},
                **{f"last_{m}": s["last_epoch"][m] for m in ("war", "uar")},
            }
        )
    keys = ("best_war", "best_uar", "last_war", "last_uar")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    table = ["| fold | best-WAR epoch | WAR | UAR | last WAR | last UAR |", "|---|---|---|---|---|---|"]
    table += [
        f"| {r['fold']} | {r['best_epoch']} | {100 * r['best_war']:.2f} | {100 * r['best_uar']:.2f} | "
        f"{100 * r['last_war']:.2f} | {100 * r['last_uar']:.2f} |"
        for r in rows
    ]
    table.append(
        f"| mean | | {100 * mean['best_war']:.2f} | {100 * mean['best_uar']:.2f} | "
        f"{100 * mean['last_war']:.2f} | {100 * mean['last_uar']:.2f} |"
    )
    result = {"folds": rows, "mean": mean}
    base.mkdir(parents=True, exist_ok=True)
    (base / "folds.json").write_text(json.dumps(result, indent=2) + "\n")
    (base / "folds.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rdfer.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default="quick",
        help="a YAML file, or a packaged config: quick (default), dfew, ferv39k, mafw",
    )
    p.add_argument("--dataset", help="dfew | ferv39k | mafw | manifest | synthetic")
    p.add_argument("--root", help="dataset root (for manifest: the train CSV)")
    p.add_argument("--fold", type=int, help="fold to train (DFEW, MAFW: 1..5)")
    p.add_argument("--folds", help="several folds in turn, e.g. 1-5; ends with the per-fold and mean table")
    p.add_argument("--epochs", type=int, help="with --resume: extend a run to this many epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="output folder (checkpoints, logs, TensorBoard, noisy_samples.csv)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CKPT",
        help="resume from a checkpoint (default: OUT/last.pt)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an --out that holds another run (its files are replaced as this run writes)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (a line per epoch still)")
    p.add_argument("--debug", action="store_true", help="show tracebacks (also RDFER_DEBUG=1)")
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value, e.g. optim.lr=1e-4")
    return p


def parse_folds(text: str) -> list[int]:
    """'1-5' -> [1..5]; '1,3' -> [1, 3]."""
    folds = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            folds += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--folds {text!r}: expected folds like 1-5 or 1,3") from None
    if not folds:
        raise ConfigError(f"--folds {text!r}: names no fold")
    return folds


def config_from_args(args: argparse.Namespace) -> Config:
    shortcuts = {
        "dataset": "data.dataset",
        "root": "data.root",
        "fold": "data.fold",
        "epochs": "optim.epochs",
        "batch_size": "data.batch_size",
        "device": "run.device",
        "out": "run.out",
        "seed": "run.seed",
    }
    if args.root is not None:  # absolute, so that evaluate and predict find it from any folder
        args.root = str(Path(args.root).resolve())
    overrides = [
        f"{key}={getattr(args, name)}" for name, key in shortcuts.items() if getattr(args, name) is not None
    ]
    return load_config(args.config, [*overrides, *args.overrides])


def _resume_value(args: argparse.Namespace, argv: list[str]) -> None:
    """`--resume optim.lr=1e-3`: argparse takes the override as the checkpoint; give it back, in its place
    among the other overrides (a later one wins)."""
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        args.overrides = sorted([*args.overrides, args.resume], key=argv.index)
        args.resume = ""


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_intermixed_args(argv)
    _resume_value(args, argv)
    cfg = config_from_args(args)
    progress = not args.no_progress and sys.stderr.isatty()
    if args.folds:
        if args.resume is not None:
            raise ConfigError("--resume resumes one fold; use --fold K --out DIR/foldK --resume")
        train_folds(cfg, parse_folds(args.folds), progress, overwrite=args.overwrite)
        return 0
    resume = None if args.resume is None else (args.resume or Path(cfg.run.out) / "last.pt")
    summary = train(cfg, resume=resume, progress=progress, overwrite=args.overwrite)
    if "best_war_epoch" not in summary:  # not rank 0 of a torchrun job
        return 0
    b, last = summary["best_war_epoch"], summary["last_epoch"]
    print(
        json.dumps(
            {
                "best_war_epoch": b,
                "last_epoch": last,
                "noisy_flagged": summary["noisy_flagged"],
                "out": summary["out"],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

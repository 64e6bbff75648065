"""python -m rdfer.evaluate --checkpoint P [--dataset ... --root ... --fold K]: UAR, WAR, per-class recall and
the confusion matrix of a checkpoint on a test split, as JSON (and a PNG on request).

Sampling is deterministic (segment centres, no augmentation) and every clip is evaluated: no batch is dropped.
A clip that cannot be read is an error, or with --skip-bad is left out and listed in the JSON under "skipped".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rdfer import cli, runtime
from rdfer.config import load_config
from rdfer.data.prepare import build_loader, load_splits
from rdfer.errors import ConfigError, DataError
from rdfer.evaluation import evaluate_loader
from rdfer.models import RDFER


def plot_confusion(metrics: dict, classes, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = torch.tensor(metrics["confusion"], dtype=torch.float64)
    norm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(classes), 1 + 0.7 * len(classes)))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    heading = f"WAR {100 * metrics['war']:.2f}  UAR {100 * metrics['uar']:.2f}"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rdfer.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="last.pt or best.pt of a training run")
    p.add_argument("--dataset", help="default: the checkpoint's")
    p.add_argument("--root", help="default: the checkpoint's")
    p.add_argument("--fold", type=int)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable clips out and list them")
    p.add_argument("--output", type=Path, help="write the JSON here too")
    p.add_argument("--png", type=Path, help="write the confusion matrix as a PNG here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks (also RDFER_DEBUG=1)")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.output, args.png):  # found now, not after the whole evaluation
        if path is not None and not path.parent.is_dir():
            raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    device = runtime.pick_device(args.device)
    model = RDFER.from_checkpoint(args.checkpoint, device)
    overrides = [
        f"data.{k}={v}"
        for k, v in (
            ("dataset", args.dataset),
            ("root", args.root),
            ("fold", args.fold),
            ("batch_size", args.batch_size),
            ("workers", args.workers),
        )
        if v is not None
    ]
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    cfg = load_config(model.config.to_dict(), overrides)
    root = cfg.data.root
    if args.root is None and root is not None and not Path(root).exists():
        raise DataError(
            f"{args.checkpoint}: its data.root {root} does not exist here (a path relative to where "
            "it was trained?): pass --root"
        )
    progress = not args.no_progress and sys.stderr.isatty()
    train_split, test_split = load_splits(cfg.data, progress)
    split = test_split if args.split == "test" else train_split
    if tuple(split.classes) != model.classes:
        raise ConfigError(
            f"the checkpoint's classes {model.classes} are not the {args.split} split's {split.classes}"
        )
    loader = build_loader(
        split,
        cfg.data,
        train=False,
        batch_size=cfg.data.batch_size,
        seed=cfg.run.seed,
        device=device,
        progress=progress,
    )
    metrics = evaluate_loader(model, loader, device, cfg.run, split.classes, progress)
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": cfg.data.dataset,
        "fold": cfg.data.fold,
        "split": args.split,
        "classes": list(split.classes),
        **metrics,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if args.png:
        title = f"{args.checkpoint} on {cfg.data.dataset} fold {cfg.data.fold} {args.split}"
        plot_confusion(metrics, split.classes, args.png, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m rdfer.experiments.noise: does RDFER tell wrong labels from hard clips, and does acting on it make
training survive label noise? (docs/method.md §3, measured on SynthDFER.)

One clean SynthDFER dataset (the `noise` preset: 1,680 train / 420 test clips at 32x32) is generated, or found
in the cache, and decoded once into the frame cache. For each label-noise setting the training labels are
flipped in memory with SynthDFER's own noise model (`rdfer.data.synth.noise.flip_labels`: exactly
round(rate * N) wrong labels), and RDFER is trained with each method on the same clips, schedule and seed:

- `ce`: plain (label-smoothed) cross-entropy, every weight 1 (`robust.enabled=false`); the `rdfer` method's
  statistics and decisions are still kept, so they are judged without being acted on;
- `small-loss`: a 2-component Gaussian mixture of the per-sample loss selects the clean samples
  (`robust.method=small_loss`, DivideMix's selection step);
- `oracle`: weight robust.noisy_weight on exactly the truly noisy samples, from the first step: the ceiling;
- `rdfer`: the package's `rdfer` method acting on its decisions (robust.enabled=true; the package's default
  trains like `ce` and only lists the suspects);
- `agreement` (on request): the paper's agreement rule.
- `elr` (on request): early-learning regularisation (`robust.method=elr`), a loss term, every weight 1.

Reported per run and per epoch (rdfer.experiments.judge): clean-test WAR / UAR; the AUROC of the method's
noise score and of the plain per-sample loss, noisy vs clean and noisy vs hard; the samples flagged noisy
against the truth, and the share of hard clips flagged noisy by SynthDFER's hard reason. Written to --out:
results.json, results.md (tables, targets met or not, settings), accuracy.png, scores_hist.png, and one folder
per run (the trainer's outputs plus result.json). A run whose result.json matches its config and labels is
reused, so an interrupted experiment continues where it stopped; delete a run's folder to run it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rdfer import checkpoint
from rdfer.config import Config, ConfigError, load_config
from rdfer.data.prepare import load_splits, resolve_root
from rdfer.data.records import DataError, Split
from rdfer.data.synth import PRESETS as SYNTH_PRESETS
from rdfer.data.synth import load_ground_truth
from rdfer.data.synth.noise import flip_labels
from rdfer.experiments import common
from rdfer.experiments.common import describe_device
from rdfer.experiments.judge import judge, true_categories
from rdfer.experiments.noise_report import markdown, plot_accuracy, plot_histograms
from rdfer.robust.oracle import OracleSelector
from rdfer.robust.selector import make_selector

SETTINGS: dict[str, tuple[str, float]] = {  # (kind, rate) of the label noise
    "symmetric-0": ("symmetric", 0.0),
    "symmetric-20": ("symmetric", 0.2),
    "symmetric-40": ("symmetric", 0.4),
    "pairs-30": ("pairs", 0.3),
}
METHODS: dict[str, list[str]] = {
    "ce": ["robust.enabled=false", "robust.method=rdfer"],
    "small-loss": ["robust.enabled=true", "robust.method=small_loss"],
    "oracle": ["robust.enabled=true", "robust.method=oracle"],
    "rdfer": ["robust.enabled=true", "robust.method=rdfer"],
    "agreement": ["robust.enabled=true", "robust.method=agreement"],
    "elr": ["robust.enabled=true", "robust.method=elr"],
}
DEFAULT_METHODS = ("ce", "small-loss", "oracle", "rdfer")


@dataclasses.dataclass(frozen=True)
class Preset:
    settings: tuple[str, ...]
    overrides: tuple[str, ...]  # on top of the packaged `quick` config
    note: str


# Both train the packaged `quick` network on 32x32 frames of SynthDFER `noise`, batch 16, one torch thread.
PRESETS: dict[str, Preset] = {
    "quick": Preset(
        ("symmetric-0", "symmetric-40"),
        ("data.synth_preset=noise", "data.image_size=32", "optim.epochs=8"),
        "under 20 minutes on 2 CPU cores from a fresh cache",
    ),
    "full": Preset(
        tuple(SETTINGS),
        ("data.synth_preset=noise", "data.image_size=32", "optim.epochs=18"),
        "under 90 minutes on 2 CPU cores",
    ),
}
_FIXED = common.FIXED


def experiment_config(preset: str, overrides: list[str] | tuple = ()) -> Config:
    """Every run's base config: `quick` <- the preset <- the user's overrides <- clean SynthDFER `noise`."""
    return common.base_config(PRESETS, preset, overrides)


def noisy_split(split: Split, given: np.ndarray) -> Split:
    """The split with its labels replaced (same records, ids and order)."""
    records = [dataclasses.replace(r, label=int(g)) for r, g in zip(split.records, given, strict=False)]
    return dataclasses.replace(split, records=records)


def selector_factory(method: str, truth: np.ndarray):
    """make_selector's stand-in for the trainer: the oracle learns the truly noisy samples here."""
    if method != "oracle":
        return make_selector
    return functools.partial(OracleSelector, noisy=torch.as_tensor(truth == 2))


def run_one(
    cfg: Config,
    splits: tuple[Split, Split],
    given: np.ndarray,
    truth: np.ndarray,
    reasons: np.ndarray,
    info: dict,
    progress: bool,
) -> dict:
    """Train one (setting, method) and judge its selector; reuse a finished one (same config, labels)."""
    from rdfer.training import train

    out = Path(cfg.run.out)
    key = {"config": cfg.to_dict(), "labels": common.labels_digest(given)}
    previous = common.finished(out, key, f"{info['setting']}/{info['method']}")
    if previous is not None:
        return previous
    t0 = time.perf_counter()
    train_split, test_split = splits
    make = selector_factory(info["method"], truth)
    summary = train(
        cfg,
        splits=(noisy_split(train_split, given), test_split),
        progress=progress,
        overwrite=True,
        make_selector=make,
    )
    selector = make(cfg.robust, len(train_split), cfg.optim.epochs, torch.device("cpu"))
    selector.load_state_dict(checkpoint.load(out / "last.pt")["selector"])
    result = {
        **info,
        "key": key,
        "realised_noise": float((given != np.asarray([r.label for r in train_split.records])).mean()),
        "test_last": summary["last_epoch"],
        "test_best_war_epoch": summary["best_war_epoch"],
        **judge(selector, truth, reasons, summary["history"]),
        "history": summary["history"],
        "seconds": time.perf_counter() - t0,
    }
    return common.save_result(out, key, result)


def ground_truth(base: Config, train_split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class, is hard, hard reason) per training sample, from the generated dataset's ground truth."""
    root = resolve_root(base.data, progress=False)  # already generated by load_splits
    truths = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
    try:
        rows = [truths[r.key] for r in train_split.records]
    except KeyError as e:
        raise DataError(f"{root}: train clip {e} has no ground-truth row") from None
    true = np.array([t.true_index for t in rows])
    if not np.array_equal(true, [r.label for r in train_split.records]):
        raise DataError(
            f"{root}: the training labels are not the true ones; the experiment needs clean SynthDFER"
        )
    return true, np.array([t.is_hard for t in rows]), np.array([t.hard_reason for t in rows])


def run_experiment(
    preset: str = "quick",
    out: str | Path = "runs/noise",
    settings: list[str] | None = None,
    methods: list[str] | None = None,
    overrides: list[str] | tuple = (),
    noise_seed: int = 0,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    base = experiment_config(preset, overrides)
    settings = list(PRESETS[preset].settings) if settings is None else settings
    methods = list(DEFAULT_METHODS) if methods is None else methods
    for names, known in ((settings, SETTINGS), (methods, METHODS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    out = Path(out)
    t0 = time.perf_counter()
    splits = load_splits(base.data, progress)
    true, hard, reasons = ground_truth(base, splits[0])
    results = []
    for setting in settings:
        kind, rate = SETTINGS[setting]
        given = flip_labels(true, rate, kind, noise_seed)
        truth = true_categories(true, given, hard)
        for method in methods:
            cfg = load_config(base.to_dict(), [*METHODS[method], f"run.out={out / setting / method}"])
            info = {"setting": setting, "noise_kind": kind, "noise_rate": rate, "method": method}
            print(f"== {setting} / {method}", file=sys.stderr)
            r = run_one(cfg, splits, given, truth, reasons, info, progress)
            print(
                f"== {setting} / {method}: last WAR {100 * r['test_last']['war']:.1f}, AUROC {r['auroc']}, "
                f"hard flagged noisy {r['hard_flagged_noisy']} ({r['seconds']:.0f} s)",
                file=sys.stderr,
            )
            results.append(r)
    report = describe(base, preset, overrides, noise_seed, command, splits, int(hard.sum()), results)
    report["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report, METHODS))
    plot_accuracy(report, out / "accuracy.png")
    plot_histograms(results, out / "scores_hist.png")
    return report


def describe(
    base: Config,
    preset: str,
    overrides,
    noise_seed: int,
    command: str | None,
    splits,
    true_hard: int,
    results: list[dict],
) -> dict:
    synth = SYNTH_PRESETS[base.data.synth_preset]
    return {
        "command": command,
        "device": describe_device(),
        "date": datetime.date.today().isoformat(),
        "preset": preset,
        "overrides": list(overrides),
        "preset_overrides": [*PRESETS[preset].overrides, *overrides, *_FIXED],
        "noise_seed": noise_seed,
        "generator": {"preset": synth.name, "seed": base.data.synth_seed, **dataclasses.asdict(synth)},
        "train_clips": len(splits[0]),
        "test_clips": len(splits[1]),
        "true_hard": true_hard,
        "config": base.to_dict(),
        "runs": [{k: v for k, v in r.items() if k not in ("scores", "key")} for r in results],
    }


def build_parser() -> argparse.ArgumentParser:
    presets = "; ".join(f"{k}: {', '.join(v.settings)}, {v.note}" for k, v in PRESETS.items())
    p = common.parser("rdfer.experiments.noise", __doc__, list(PRESETS), presets)
    p.add_argument("--out", help="output folder (default runs/noise-PRESET)")
    p.add_argument(
        "--settings", help=f"comma-separated subset of {','.join(SETTINGS)} (default: the preset's)"
    )
    p.add_argument(
        "--methods",
        help=f"comma-separated subset of {','.join(METHODS)} (default {','.join(DEFAULT_METHODS)})",
    )
    common.add_run_arguments(p, "data.synth_seed=1")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    split, command = common.comma_list, common.start("rdfer.experiments.noise", argv, args.threads)
    try:
        report = run_experiment(
            args.preset,
            args.out or f"runs/noise-{args.preset}",
            split(args.settings),
            split(args.methods),
            args.overrides,
            args.noise_seed,
            not args.no_progress and sys.stderr.isatty(),
            command.strip(),
        )
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report, METHODS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

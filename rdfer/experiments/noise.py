"""python -m rdfer.experiments.noise: does RDFER tell wrong labels from hard clips, and does acting on it make
training survive label noise? (docs/method.md §3, measured on SynthDFER.)

One clean SynthDFER dataset (the `noise` preset: 1,680 train / 420 test clips at 32x32) is generated, or found
in the cache, and decoded once into the frame cache. For each label-noise setting and noise seed the training
labels are flipped in memory with SynthDFER's own noise model (`rdfer.data.synth.noise.flip_labels`: exactly
round(rate * N) wrong labels), and RDFER is trained with each method on the same clips, schedule and seed, for
30 epochs: long enough that cross-entropy fits the wrong labels, as a user's recipe does.

- `ce`: plain (label-smoothed) cross-entropy, every weight 1 (`robust.enabled=false`); the `rdfer` method's
  statistics and decisions are still kept, so they are judged without being acted on;
- `rdfer`: the package's default configuration, whatever it is (`robust.enabled=true`): the early-learning
  regularisation term on every sample, the small-loss split listing the suspects;
- `oracle`: weight robust.noisy_weight on exactly the truly noisy samples, from the first step: the ceiling;
- on request, the baselines: `split-elr` (the split's suspects left out as well, `robust.exclude=true`),
  `small-loss` (the split leaving them out, without the term), `exclusion` (the package's method before
  2026-12), `agreement` (the paper's rule), `coteaching` (the two streams pick each other's small-loss
  samples).

Reported per run and per epoch (rdfer.experiments.judge): clean-test WAR / UAR; the AUROC of the method's
noise score and of the plain per-sample loss, noisy vs clean and noisy vs hard; the samples flagged noisy
against the truth, and the share of hard clips flagged noisy by SynthDFER's hard reason. Written to --out:
results.json, results.md (tables, targets met or not, settings), accuracy.png, scores_hist.png, and one folder
per run (the trainer's outputs plus result.json). A run whose result.json matches its config and labels is
reused, so an interrupted experiment continues where it stopped; delete a run's folder to run it again.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
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
from rdfer.experiments.baselines.agreement import AgreementSelector
from rdfer.experiments.baselines.coteaching import CoTeachingSelector
from rdfer.experiments.baselines.exclusion import ExclusionSelector
from rdfer.experiments.baselines.oracle import OracleSelector
from rdfer.experiments.common import describe_device
from rdfer.experiments.judge import judge, true_categories
from rdfer.experiments.noise_report import markdown, plot_accuracy, plot_histograms
from rdfer.robust.selection import make_selector, restored_selector

SETTINGS: dict[str, tuple[str, float]] = {  # (kind, rate) of the label noise
    "symmetric-0": ("symmetric", 0.0),
    "symmetric-20": ("symmetric", 0.2),
    "symmetric-40": ("symmetric", 0.4),
    "pairs-30": ("pairs", 0.3),
}
# Each method: its config overrides, and the selector factory that replaces the training core's (None: the
# core's `rdfer` method with those overrides). The baselines live in rdfer.experiments.baselines.
METHODS: dict[str, tuple[list[str], Callable | None]] = {
    "ce": (["robust.enabled=false"], None),
    "rdfer": (["robust.enabled=true"], None),
    "split-elr": (["robust.enabled=true", "robust.exclude=true"], None),
    "small-loss": (["robust.enabled=true", "robust.exclude=true", "robust.elr_lambda=0"], None),
    "oracle": (["robust.enabled=true"], OracleSelector),
    "exclusion": (["robust.enabled=true"], ExclusionSelector),
    "agreement": (["robust.enabled=true"], AgreementSelector),
    "coteaching": (["robust.enabled=true"], CoTeachingSelector),
}
DEFAULT_METHODS = ("ce", "oracle", "rdfer")


@dataclasses.dataclass(frozen=True)
class Preset:
    settings: tuple[str, ...]
    overrides: tuple[str, ...]  # on top of the packaged `quick` config
    noise_seeds: tuple[int, ...]
    note: str


# The regime, fixed before any comparison: the packaged `quick` network, batch 16, on 1,680 32x32 clips of
# SynthDFER `noise` for 30 epochs. There cross-entropy fits the wrong labels before the run ends (its training
# accuracy on the given labels passes the clean share and its test WAR falls from its best epoch; the report
# shows both), as a DFER recipe's 100 epochs over DFEW do; at 8 or 18 epochs it was still learning.
REGIME = ("data.synth_preset=noise", "data.image_size=32", "optim.epochs=30")
PRESETS: dict[str, Preset] = {
    "quick": Preset(("symmetric-0", "symmetric-40"), REGIME, (0, 1, 2), "under 30 minutes on 2 CPU cores"),
    "full": Preset(tuple(SETTINGS), REGIME, (0, 1, 2), "under 2 hours on 2 CPU cores"),
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
    """make_selector's stand-in for the trainer: the method's baseline, the oracle told the truly noisy
    samples."""
    factory = METHODS[method][1]
    if factory is None:
        return make_selector
    if factory is OracleSelector:
        return functools.partial(OracleSelector, noisy=torch.as_tensor(truth == 2))
    return factory


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
    key = {"method": info["method"], "config": cfg.to_dict(), "labels": common.labels_digest(given)}
    previous = common.finished(out, key, f"seed {info['noise_seed']} {info['setting']}/{info['method']}")
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
    selector = restored_selector(cfg, checkpoint.load(out / "last.pt")["selector"], make)
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


@dataclasses.dataclass
class Task:
    """One run of the experiment: a method on one noise setting and seed."""

    cfg: Config
    given: np.ndarray
    truth: np.ndarray
    info: dict


def run_experiment(
    preset: str = "quick",
    out: str | Path = "runs/noise",
    settings: list[str] | None = None,
    methods: list[str] | None = None,
    overrides: list[str] | tuple = (),
    noise_seeds: list[int] | None = None,
    progress: bool = True,
    command: str | None = None,
    jobs: int = 1,
) -> dict:
    base = experiment_config(preset, overrides)
    settings = list(PRESETS[preset].settings) if settings is None else settings
    methods = list(DEFAULT_METHODS) if methods is None else methods
    seeds = list(PRESETS[preset].noise_seeds) if noise_seeds is None else noise_seeds
    for names, known in ((settings, SETTINGS), (methods, METHODS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    out = Path(out)
    t0 = time.perf_counter()
    splits = load_splits(base.data, progress)
    true, hard, reasons = ground_truth(base, splits[0])
    tasks = []
    for seed in seeds:
        for setting in settings:
            kind, rate = SETTINGS[setting]
            if rate == 0 and seed != seeds[0]:
                continue  # no label flipped whatever the seed: the runs would repeat the first seed's
            given = flip_labels(true, rate, kind, seed)
            truth = true_categories(true, given, hard)
            for method in methods:
                if method == "oracle" and rate == 0:
                    continue  # no wrong label to leave out: the oracle is cross-entropy there
                run_out = out / f"seed{seed}" / setting / method
                cfg = load_config(base.to_dict(), [*METHODS[method][0], f"run.out={run_out}"])
                info = {
                    "setting": setting,
                    "noise_kind": kind,
                    "noise_rate": rate,
                    "noise_seed": seed,
                    "method": method,
                }
                tasks.append(Task(cfg, given, truth, info))
    results = run_tasks(tasks, splits, reasons, progress, jobs)
    report = describe(base, preset, overrides, seeds, command, splits, int(hard.sum()), results)
    report["seconds"] = time.perf_counter() - t0
    report["jobs"] = jobs
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report, METHODS))
    plot_accuracy(report, out / "accuracy.png")
    plot_histograms([r for r in results if r["noise_seed"] == seeds[0]], out / "scores_hist.png")
    return report


def _announce(r: dict) -> None:
    print(
        f"== seed {r['noise_seed']} {r['setting']} / {r['method']}: last WAR "
        f"{100 * r['test_last']['war']:.1f}, AUROC {r['auroc']}, hard flagged noisy "
        f"{r['hard_flagged_noisy']} ({r['seconds']:.0f} s)",
        file=sys.stderr,
    )


def run_tasks(tasks: list[Task], splits, reasons: np.ndarray, progress: bool, jobs: int) -> list[dict]:
    """Every task's result, in the tasks' order; with jobs > 1 that many runs at once, each in a process of
    its own (one torch thread, its log in its run folder)."""
    if jobs <= 1:
        results = []
        for t in tasks:
            print(f"== seed {t.info['noise_seed']} {t.info['setting']} / {t.info['method']}", file=sys.stderr)
            results.append(run_one(t.cfg, splits, t.given, t.truth, reasons, t.info, progress))
            _announce(results[-1])
        return results
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(_logged_run, t, splits, reasons) for t in tasks]
        for f in concurrent.futures.as_completed(futures):
            _announce(f.result())
        return [f.result() for f in futures]


def _logged_run(task: Task, splits, reasons: np.ndarray) -> dict:
    """run_one in a worker process: one torch thread, stdout and stderr into the run's train.log."""
    torch.set_num_threads(1)
    out = Path(task.cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    with (
        (out / "train.log").open("w", buffering=1) as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        return run_one(task.cfg, splits, task.given, task.truth, reasons, task.info, False)


def describe(
    base: Config,
    preset: str,
    overrides,
    noise_seeds: list[int],
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
        "noise_seeds": list(noise_seeds),
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
    p.add_argument(
        "--noise-seeds",
        type=common.int_list,
        help="comma-separated seeds of the label flips (default: the preset's, 0,1,2)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="runs at once, each in its own process with one torch thread (default: the CPU cores, or 1 "
        "with a GPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. data.synth_seed=1")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    split = common.comma_list
    # One torch thread a run: on 2 cores two runs at once beat one run on two threads.
    command = common.start("rdfer.experiments.noise", argv, 1)
    jobs = args.jobs or (1 if torch.cuda.is_available() else len(os.sched_getaffinity(0)))
    try:
        report = run_experiment(
            args.preset,
            args.out or f"runs/noise-{args.preset}",
            split(args.settings),
            split(args.methods),
            args.overrides,
            args.noise_seeds,
            not args.no_progress and sys.stderr.isatty(),
            command.strip(),
            max(jobs, 1),
        )
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report, METHODS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

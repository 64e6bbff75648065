"""python -m rdfer.experiments.architecture: does the key-expression re-sampling find the expression, and do
two streams beat one? (docs/method.md §2, measured on SynthDFER, whose ground truth knows every clip's apex
and distractor windows.)

One clean SynthDFER dataset (the `noise` preset, as the noise experiment's) is generated or found in the
cache and decoded once into the frame cache. For each label-noise setting (0% and 20% symmetric, the labels
flipped in memory as in rdfer.experiments.noise), every variant trains on the same clips, schedule,
augmentation and seeds (plain cross-entropy, the package's default):

- `rdfer`: the network as the package ships it (detail clips at the key positions);
- `synopsis-only`: no detail stream; the synopsis stream predicts (model.detail_clips=off);
- `uniform-clips`: the K detail clips evenly spaced (model.detail_clips=uniform);
- `random-clips`: at random positions, drawn per step in training, fixed per clip at test
  (model.detail_clips=random);
- `apex-clips`: centred on the true apex window from the ground truth, in training and at test: the ceiling of
  any re-sampling (an experiment-only oracle, rdfer.experiments.positions.ApexPlacer);
- `peer`: a single-stream multi-instance network in the style of M3DFEL on the same frame encoder and frame
  budget (rdfer.models.peer);
- `top-class-clips` (on request): all K clips on the most probable synopsis instances of the class that
  peaks highest (model.detail_clips=top), a re-sampling that can put every clip on the target.

Reported per run (results.json `runs`) and per variant as mean and spread over the seeds (results.md,
accuracy.png): clean-test WAR/UAR at the last epoch, overall and per clip kind (easy, intensity, short_apex,
distractor); training clips/s on this machine; and for the variants that place clips the key-position hit
rates against their chance levels (rdfer.experiments.positions). A run whose result.json matches its variant,
config and labels is reused; delete its folder to run it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import numpy as np

from rdfer.config import Config, ConfigError, load_config
from rdfer.data.prepare import load_splits, resolve_root
from rdfer.data.records import DataError, Split
from rdfer.data.synth import ClipTruth, load_ground_truth
from rdfer.data.synth.noise import flip_labels
from rdfer.experiments import common
from rdfer.experiments.architecture_cost import step_rates
from rdfer.experiments.architecture_eval import evaluate_run
from rdfer.experiments.architecture_report import write_report
from rdfer.experiments.noise import SETTINGS, noisy_split
from rdfer.experiments.positions import ApexPlacer, any_clip_chance
from rdfer.models import RDFER
from rdfer.models.peer import MILPeer


@dataclasses.dataclass(frozen=True)
class Variant:
    overrides: tuple[str, ...]
    places_clips: bool
    note: str


VARIANTS: dict[str, Variant] = {
    "rdfer": Variant((), True, "the packaged network: detail clips at the key positions"),
    "synopsis-only": Variant(("model.detail_clips=off",), False, "no detail stream"),
    "uniform-clips": Variant(("model.detail_clips=uniform",), True, "detail clips evenly spaced"),
    "random-clips": Variant(("model.detail_clips=random",), True, "detail clips at random positions"),
    "apex-clips": Variant((), True, "oracle: detail clips centred on the true apex"),
    "peer": Variant((), False, "M3DFEL-style single-stream MIL, same encoder and frame budget"),
    # On request: the re-sampling changed so that every clip can land on the target (model.detail_clips=top).
    "top-class-clips": Variant(("model.detail_clips=top",), True, "all K clips on the top class's peaks"),
}
DEFAULT_VARIANTS = ("rdfer", "synopsis-only", "uniform-clips", "random-clips", "apex-clips", "peer")


@dataclasses.dataclass(frozen=True)
class Preset:
    seeds: tuple[int, ...]
    settings: tuple[str, ...]
    overrides: tuple[str, ...]  # on top of the packaged `quick` config
    note: str


# Both train the packaged `quick` network on 32x32 frames of SynthDFER `noise` (1,680 train / 420 test clips,
# the noise experiment's data, fixed before this experiment), batch 16, one torch thread; tested once, at the
# last epoch (the report reads only that epoch). Robust training is off in both (plain cross-entropy, as the
# package's default was when the reports were measured): a variant's number is its network's alone.
_PLAIN = "robust.enabled=false"
PRESETS: dict[str, Preset] = {
    "quick": Preset(
        (0, 1),
        ("symmetric-0", "symmetric-20"),
        ("data.synth_preset=noise", "data.image_size=32", "optim.epochs=6", "run.eval_every=6", _PLAIN),
        "2 seeds, 6 epochs: under 20 minutes on 2 CPU cores from a fresh cache",
    ),
    "full": Preset(
        (0, 1, 2),
        ("symmetric-0", "symmetric-20"),
        ("data.synth_preset=noise", "data.image_size=32", "optim.epochs=18", "run.eval_every=18", _PLAIN),
        "3 seeds, 18 epochs: about 90 minutes on 2 CPU cores (estimated, not yet run)",
    ),
}
_FIXED = common.FIXED


def experiment_config(preset: str, overrides: list[str] | tuple = ()) -> Config:
    """Every run's base config: `quick` <- the preset <- the user's overrides <- clean SynthDFER."""
    return common.base_config(PRESETS, preset, overrides)


def truths(base: Config, splits: tuple[Split, Split]) -> tuple[list[ClipTruth], list[ClipTruth]]:
    """The ground-truth rows of the train and test splits, in the splits' sample order."""
    root = resolve_root(base.data, progress=False)  # already generated by load_splits
    table = {(t.split, t.key): t for t in load_ground_truth(root)}
    out = []
    for name, split in zip(("train", "test"), splits, strict=True):
        try:
            rows = [table[name, r.key] for r in split.records]
        except KeyError as e:
            raise DataError(f"{root}: {name} clip {e} has no ground-truth row") from None
        if [t.true_index for t in rows] != [r.label for r in split.records]:
            raise DataError(
                f"{root}: the {name} labels are not the true ones; the experiment needs clean SynthDFER"
            )
        out.append(rows)
    return out[0], out[1]


def model_factory(variant: str, rows: tuple[list[ClipTruth], list[ClipTruth]]):
    """train()'s make_model for a variant: None (RDFER as configured), the peer, or RDFER with the oracle."""
    if variant == "peer":
        return MILPeer
    if variant == "apex-clips":
        return functools.partial(_with_apex_placer, rows=rows)
    return None


def _with_apex_placer(cfg: Config, classes, rows) -> RDFER:
    model = RDFER(cfg, classes)
    model.clip_placer = ApexPlacer(rows[0], rows[1], model.clips, cfg.data.num_frames)
    return model


def run_one(cfg: Config, info: dict, splits, given: np.ndarray, rows, progress: bool) -> dict:
    """Train one (setting, variant, seed) and evaluate it on the clean test split; reuse a finished one."""
    from rdfer.training import train

    out = Path(cfg.run.out)
    key = {"variant": info["variant"], "config": cfg.to_dict(), "labels": common.labels_digest(given)}
    previous = common.finished(out, key, f"{info['setting']}/{info['variant']}/seed {info['seed']}")
    if previous is not None:
        return previous
    t0 = time.perf_counter()
    make_model = model_factory(info["variant"], rows)
    summary = train(
        cfg,
        splits=(noisy_split(splits[0], given), splits[1]),
        progress=progress,
        overwrite=True,
        make_model=make_model,
    )
    result = {
        **info,
        **evaluate_run(cfg, out / "last.pt", make_model or RDFER, splits[1], rows[1], progress),
        "clips_per_s": common.clips_per_second(summary["history"]),
        "trainer_last_epoch": summary["last_epoch"],
        "seconds": time.perf_counter() - t0,
    }
    if not VARIANTS[info["variant"]].places_clips:
        result["hit_rate"] = None
    return common.save_result(out, key, result)


def run_experiment(
    preset: str = "quick",
    out: str | Path = "runs/architecture",
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
    settings: list[str] | None = None,
    overrides: list[str] | tuple = (),
    noise_seed: int = 0,
    progress: bool = True,
    command: str | None = None,
    cost_rounds: int = 5,
) -> dict:
    base = experiment_config(preset, overrides)
    variants = list(DEFAULT_VARIANTS) if variants is None else variants
    seeds = list(PRESETS[preset].seeds) if seeds is None else seeds
    settings = list(PRESETS[preset].settings) if settings is None else settings
    for names, known in ((settings, SETTINGS), (variants, VARIANTS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    out, t0 = Path(out), time.perf_counter()
    splits = load_splits(base.data, progress)
    rows = truths(base, splits)
    true = np.array([t.true_index for t in rows[0]])
    results = []
    for setting in settings:
        given = flip_labels(true, SETTINGS[setting][1], SETTINGS[setting][0], noise_seed)
        for variant in variants:
            for seed in seeds:
                where = out / setting / variant / f"seed-{seed}"
                extra = [*VARIANTS[variant].overrides, f"run.seed={seed}", f"run.out={where}"]
                cfg = load_config(base.to_dict(), extra)
                info = {"variant": variant, "setting": setting, "seed": seed}
                print(f"== {setting} / {variant} / seed {seed}", file=sys.stderr)
                r = run_one(cfg, info, splits, given, rows, progress)
                print(f"== WAR {100 * r['test']['war']:.1f} ({r['seconds']:.0f} s)", file=sys.stderr)
                results.append(r)
    report = common.describe(base, command, splits, [*PRESETS[preset].overrides, *overrides, *_FIXED])
    report |= {"preset": preset, "variants": variants, "seeds": seeds, "settings": settings}
    report |= {"noise_seed": noise_seed, "test_kinds": _kinds(rows[1])}
    report["chance_any_clip"] = any_clip_chance(rows[1], min(base.model.clips, len(splits[0].classes)))
    print("== each variant's training step, side by side", file=sys.stderr)
    made = {v: (VARIANTS[v].overrides, model_factory(v, rows)) for v in variants}
    report["step_clips_per_s"] = step_rates(base, made, splits[0].classes, rounds=cost_rounds)
    report["runs"] = [{k: r[k] for k in ROW_KEYS} for r in results]
    report["details"] = [{k: v for k, v in r.items() if k not in DROPPED or k in INFO} for r in results]
    report["seconds"], report["out"] = time.perf_counter() - t0, str(out)
    write_report(report, out, VARIANTS)
    return report


# results.json's row schema (issue 22); everything else a run measured goes to `details`.
INFO = ("variant", "setting", "seed")
ROW_KEYS = (*INFO, "test", "hit_rate", "clips_per_s")
DROPPED = (*ROW_KEYS, "key")  # the reuse key (the whole config) is in each run's result.json


def _kinds(rows: list[ClipTruth]) -> dict[str, int]:
    kinds = [r.hard_reason or "easy" for r in rows]
    return {k: kinds.count(k) for k in ("easy", "intensity", "short_apex", "distractor")}


def build_parser() -> argparse.ArgumentParser:
    presets = "; ".join(f"{k}: {v.note}" for k, v in PRESETS.items())
    p = common.parser("rdfer.experiments.architecture", __doc__, list(PRESETS), presets)
    p.add_argument("--out", help="output folder (default runs/architecture-PRESET)")
    p.add_argument(
        "--variants",
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all but top-class-clips)",
    )
    p.add_argument(
        "--seeds", type=common.int_list, help="comma-separated training seeds (default: the preset's)"
    )
    p.add_argument(
        "--settings", help="comma-separated label-noise settings (default symmetric-0,symmetric-20)"
    )
    common.add_run_arguments(p, "optim.epochs=10")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    split, command = common.comma_list, common.start("rdfer.experiments.architecture", argv, args.threads)
    try:
        report = run_experiment(
            args.preset,
            args.out or f"runs/architecture-{args.preset}",
            split(args.variants),
            args.seeds,
            split(args.settings),
            args.overrides,
            args.noise_seed,
            not args.no_progress and sys.stderr.isatty(),
            command.strip(),
        )
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(report["out"], "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

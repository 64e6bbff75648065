"""What the experiments share: reusing a finished run, the labels' digest, the report's settings block."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from rdfer.config import Config, ConfigError, load_config
from rdfer.data.synth import PRESETS as SYNTH_PRESETS

# Every run of an experiment trains on clean SynthDFER; the experiment flips the labels itself.
FIXED = ("data.dataset=synthetic", "data.synth_noise=0")


def base_config(presets: dict, preset: str, overrides: list[str] | tuple = ()) -> Config:
    """The packaged `quick` config <- the preset's overrides <- the user's <- FIXED."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(presets)}")
    return load_config("quick", [*presets[preset].overrides, *overrides, *FIXED])


def labels_digest(given: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(given, dtype=np.int64).tobytes()).hexdigest()[:16]


def finished(out: Path, key: dict, name: str) -> dict | None:
    """The result.json in `out` when it was written for `key` (same config, labels, ...), else None: an
    interrupted experiment continues where it stopped."""
    done = Path(out) / "result.json"
    if done.is_file():
        previous = json.loads(done.read_text())
        if previous.get("key") == key:
            print(f"{name}: reusing {done}", file=sys.stderr)
            return previous
    return None


def save_result(out: Path, key: dict, result: dict) -> dict:
    result = {**result, "key": key}
    (Path(out) / "result.json").write_text(json.dumps(result) + "\n")
    return result


def clips_per_second(history: list[dict]) -> float | None:
    """Training clips/s over the epochs after the first (which pays the warm-up: allocations, first reads of
    the frame cache); the only epoch when there is one."""
    rows = [h for h in history if h.get("seconds")]
    rows = rows[1:] if len(rows) > 1 else rows
    seconds = sum(h["seconds"] for h in rows)
    return sum(h["train_clips"] for h in rows) / seconds if seconds else None


def seed_stat(runs: list[dict], get) -> tuple[float, float, int] | None:
    """(mean, sample standard deviation, seeds) of get(run) over the runs that have it; None if none. A run
    without the value (get raises KeyError or TypeError, or returns None) is left out."""
    values = []
    for r in runs:
        try:
            v = get(r)
        except (KeyError, TypeError):  # a null hit_rate, a kind absent from the test split
            v = None
        if v is not None:
            values.append(float(v))
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def int_list(text: str | None) -> list[int] | None:
    """'0, 1,2' -> [0, 1, 2]; None stays None. An argparse type: anything but integers is a usage error."""
    names = comma_list(text)
    try:
        return None if names is None else [int(s) for s in names]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated integers, got {text!r}") from None


def describe(base: Config, command: str | None, splits, preset_overrides: list[str]) -> dict:
    """The settings every report states: command, device, date, generator, data sizes, config."""
    synth = SYNTH_PRESETS[base.data.synth_preset]
    return {
        "command": command,
        "device": describe_device(),
        "date": datetime.date.today().isoformat(),
        "preset_overrides": list(preset_overrides),
        "generator": {"preset": synth.name, "seed": base.data.synth_seed, **dataclasses.asdict(synth)},
        "train_clips": len(splits[0]),
        "test_clips": len(splits[1]),
        "config": base.to_dict(),
    }


def describe_device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = [f"model name: {platform.processor()}"]
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")
    return f"{model}, {torch.get_num_threads()} torch thread(s) (CPU only)"


def parser(module: str, doc: str | None, presets: list[str], presets_help: str) -> argparse.ArgumentParser:
    """An experiment's command line (its module docstring as the description) with its --preset."""
    p = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="quick", choices=presets, help=presets_help)
    return p


def add_run_arguments(p, example: str) -> None:
    """The command-line arguments every experiment takes after its own: label-noise seed, threads,
    progress bars, and config overrides for every run."""
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the label flips (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine more threads spin and run slower)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help=f"config overrides for every run, e.g. {example}")


def comma_list(text: str | None) -> list[str] | None:
    """'a, b,' -> ['a', 'b']; None (the argument not given) stays None."""
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def start(module: str, argv: list[str] | None, threads: int) -> str:
    """Set the torch threads; the command line as the report states it."""
    torch.set_num_threads(max(threads, 1))
    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)

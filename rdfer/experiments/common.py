"""What the experiments share: reusing a finished run, the labels' digest, the report's settings block."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from rdfer.config import Config
from rdfer.data.synth import PRESETS as SYNTH_PRESETS


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


def describe(base: Config, command: str | None, splits, preset_overrides: list[str]) -> dict:
    """The settings every report states: command, device, date, generator, data sizes, config."""
    from rdfer.experiments.noise import describe_device

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

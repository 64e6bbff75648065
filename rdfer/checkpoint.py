"""Checkpoints written atomically: a temporary file in the same folder, flushed to disk, then renamed over the
target. A run killed while writing leaves the previous checkpoint whole, and the temporary file is never read."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


def save(path: Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        # The checkpoint holds RNG states (numpy arrays, tuples): not loadable with weights_only=True.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable rdfer checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise ValueError(f"{path} is not an rdfer checkpoint (format {FORMAT})")
    return state

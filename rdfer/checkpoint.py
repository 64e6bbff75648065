"""Checkpoints: written atomically, read without running code.

Writing: a temporary file in the same folder, flushed to disk, then renamed over the target, so a run killed
while writing leaves the previous checkpoint whole and the temporary file is never read.

Reading: `torch.load(weights_only=True)`, which accepts tensors and plain containers (dict, list, tuple, str,
numbers, None) and refuses anything else, so a tampered or foreign file cannot execute code. A checkpoint holds
only such objects (the RNG states are stored as tensors and lists for that reason).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from rdfer.errors import CheckpointError

FORMAT = 1
TRAINING_KEYS = ("optimizer", "scheduler", "selector", "rng", "history", "step")


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


def load(path: Path, *, for_training: bool = False) -> dict[str, Any]:
    """The checkpoint's dict. `for_training`: it must hold the optimiser, memory and RNG (last.pt), not only
    the weights (best.pt)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a checkpoint file" if path.is_dir() else "no such file"
        raise CheckpointError(f"{path}: {what}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain containers, which could run code "
            f"when loaded ({first}); an rdfer checkpoint never does"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a torch file: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{path}: not an rdfer checkpoint (format {FORMAT})")
    if for_training and any(k not in state for k in TRAINING_KEYS):
        raise CheckpointError(
            f"{path}: holds the weights only (best.pt is written that way); resume from last.pt in the same "
            "folder, or evaluate this file with python -m rdfer.evaluate"
        )
    return state

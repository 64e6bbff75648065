"""Checkpoints: written atomically, read without running code.

Writing: serialised in memory, then written whole or not at all (rdfer.files: a temporary file in the same
folder, flushed to disk, renamed over the target), so a run killed while writing leaves the previous
checkpoint whole, and a full disk is one error naming the file and the space it needs.

Reading: `torch.load(weights_only=True)`, which accepts tensors and plain containers (dict, list, tuple, str,
numbers, None) and refuses anything else, so a tampered or foreign file cannot execute code. A checkpoint
holds only such objects (the RNG states are stored as tensors and lists for that reason).
"""

from __future__ import annotations

import io
import pickle
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from rdfer import stopping
from rdfer.errors import CheckpointError
from rdfer.files import write_atomically

FORMAT = 1
TRAINING_KEYS = ("optimizer", "scheduler", "selector", "rng", "history", "step")
BEST_KEYS = ("epoch", "config", "classes", "model")  # best.pt: the weights only


def save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()  # its size is known before the disk is touched
    torch.save({"format": FORMAT, **state}, buffer)
    write_atomically(Path(path), buffer.getbuffer())


class BackgroundWriter:
    """Writes checkpoints on one background thread, one after another, so training goes on while a large
    checkpoint reaches the disk. `save` first copies every tensor of the state to host memory (so the next
    steps cannot change what is written), waits for the previous write, then starts this one. `wait` returns
    when everything is written and raises what a write raised; call it before the process ends. Neither
    can be cut short by Ctrl-C or SIGTERM (rdfer.stopping): a write in flight ends, then the stop goes on."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: Path, state: dict[str, Any]) -> None:
        snapshot = _to_host(state)
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(Path(path), snapshot), daemon=False)
        self._thread.start()

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            save(path, state)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = e

    def wait(self) -> None:
        with stopping.deferred():
            if self._thread is not None:
                stopping.uninterrupted(self._thread.join)
                self._thread = None
            if self._error is not None:
                error, self._error = self._error, None
                raise error


def _to_host(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return obj


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
            f"{path}: refused: it holds objects other than tensors and plain containers, which could run "
            f"code when loaded ({first}); an rdfer checkpoint never does"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or not a torch file: {e})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{path}: not an rdfer checkpoint (format {FORMAT})")
    if for_training and any(k not in state for k in TRAINING_KEYS):
        raise CheckpointError(
            f"{path}: holds the weights only (best.pt is written that way); resume from last.pt in the same "
            "folder, or evaluate this file with python -m rdfer.evaluate"
        )
    return state

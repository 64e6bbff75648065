"""Device, precision and random-state plumbing shared by train, evaluate and predict."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from rdfer.config import DEVICE_NAMES, RunConfig
from rdfer.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """auto (CUDA when there is one), cpu, cuda or cuda:N; a device that is not here is a ConfigError."""
    if not DEVICE_NAMES.fullmatch(name):
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            there = f"only {count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(f"device {name!r}: this machine has {there} (use auto or cpu)")
    return device


def autocast(device: torch.device, run: RunConfig):
    """bf16 autocast on CUDA by default (docs/method.md §4); full precision on the CPU unless asked."""
    enabled = run.amp == "bf16" or (run.amp == "auto" and device.type == "cuda")
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def use_channels_last(device: torch.device, run: RunConfig) -> bool:
    return run.channels_last == "on" or (run.channels_last == "auto" and device.type == "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Every global random state, as tensors and plain containers (a checkpoint loads with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

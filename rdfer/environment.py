"""rdfer's environment variables, read in one way: an empty value (`RDFER_CACHE=` in a job script) counts as
unset, so it means the default rather than the current folder or a parse error."""

from __future__ import annotations

import os
from pathlib import Path

from rdfer.errors import ConfigError


def get(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value if value else default


def number(name: str, default: float) -> float:
    value = get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a number of seconds") from None


def cache_dir() -> Path:
    """Where generated SynthDFER datasets and the frame cache go: $RDFER_CACHE, else ~/.cache/rdfer."""
    return Path(get("RDFER_CACHE") or Path.home() / ".cache" / "rdfer")


def frame_cache_dir() -> Path:
    """The frame cache's stores: $RDFER_FRAME_CACHE, else cache_dir()/frames."""
    env = get("RDFER_FRAME_CACHE")
    return Path(env) if env else cache_dir() / "frames"

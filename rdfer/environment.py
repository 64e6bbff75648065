"""rdfer's environment variables, read in one way: an empty value (`RDFER_CACHE=` in a job script) counts as
unset, so it means the default rather than the current folder or a parse error."""

from __future__ import annotations

import os

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

"""From the data section of a config to the train and test splits, generating SynthDFER into a cache folder
when the config asks for the synthetic benchmark without a root."""
from __future__ import annotations

import os
from pathlib import Path

from rdfer.config import ConfigError, DataConfig
from rdfer.data.datasets import load_split
from rdfer.data.records import Split


def cache_dir() -> Path:
    return Path(os.environ.get("RDFER_CACHE", Path.home() / ".cache" / "rdfer"))


def resolve_root(data: DataConfig, progress: bool = True) -> Path:
    if data.root is not None:
        return Path(data.root)
    if data.dataset != "synthetic":
        raise ValueError(f"data.root is required for dataset {data.dataset!r} (--root DIR)")
    from rdfer.data.synth import generate

    name = f"{data.synth_preset}-seed{data.synth_seed}-{data.synth_noise_kind}{data.synth_noise:g}"
    return generate(data.synth_preset, cache_dir() / "synth" / name, seed=data.synth_seed,
                    noise=data.synth_noise, noise_kind=data.synth_noise_kind, progress=progress)


def check_loader(data: DataConfig) -> None:
    """Only the CPU loader exists so far; `auto` uses it, and asking for DALI by name is an error."""
    if data.loader == "dali":
        raise ConfigError("data.loader=dali: the DALI pipeline is not part of rdfer yet; use data.loader=auto or torch")


def load_splits(data: DataConfig, progress: bool = True) -> tuple[Split, Split]:
    check_loader(data)
    root = resolve_root(data, progress)
    options = dict(data.options)
    if data.source is not None:
        options["source"] = data.source
    return tuple(load_split(data.dataset, root, s, data.fold, **options) for s in ("train", "test"))

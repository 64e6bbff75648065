"""From the data section of a config to the train and test splits, generating SynthDFER into a cache folder
when the config asks for the synthetic benchmark without a root."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from rdfer.config import ConfigError, DataConfig
from rdfer.data.datasets import load_split
from rdfer.data.loader import cache_split_frames, make_loader
from rdfer.data.records import Split


def cache_dir() -> Path:
    return Path(os.environ.get("RDFER_CACHE", Path.home() / ".cache" / "rdfer"))


def resolve_root(data: DataConfig, progress: bool = True) -> Path:
    if data.root is not None:
        return Path(data.root)
    if data.dataset != "synthetic":
        raise ConfigError(f"data.root is required for dataset {data.dataset!r}: pass --root DIR")
    from rdfer.data.synth import generate

    name = f"{data.synth_preset}-seed{data.synth_seed}-{data.synth_noise_kind}{data.synth_noise:g}"
    return generate(data.synth_preset, cache_dir() / "synth" / name, seed=data.synth_seed,
                    noise=data.synth_noise, noise_kind=data.synth_noise_kind, progress=progress)


def check_loader(data: DataConfig) -> None:
    """data.loader=dali needs NVIDIA DALI installed: say so before any data is generated or read."""
    from rdfer.data.dali import dali_available

    if data.loader == "dali" and not dali_available():
        raise ConfigError("data.loader=dali needs NVIDIA DALI: pip install 'rdfer[dali]', "
                          "or use data.loader=auto|torch")
    if data.loader == "dali" and data.cache_frames:
        raise ConfigError("data.cache_frames keeps decoded frames for the CPU loader; use data.loader=auto|torch")


_NOTICES: set[str] = set()


def build_loader(split: Split, data: DataConfig, *, train: bool, batch_size: int, seed: int,
                 device: torch.device, sampler=None, augment: dict | None = None, notice: bool = True,
                 progress: bool = True):
    """The clip loader `data.loader` asks for: DALI (dali, or auto where DALI can run) or the CPU DataLoader.

    auto takes DALI on a CUDA device when it is installed and the split is all frame folders or all videos,
    and otherwise the CPU loader, saying why in one line (when `notice`). Both yield the same batches.
    With `data.cache_frames` the split is decoded into memory first and the CPU loader reads it from there.
    """
    from rdfer.data.dali import dali_available, make_dali_loader, split_source

    args = dict(batch_size=batch_size, train=train, num_frames=data.num_frames, image_size=data.image_size,
                seed=seed, skip_bad=data.skip_bad, sampler=sampler, augment=augment)
    use_dali, why = data.loader == "dali", ""
    if data.loader == "auto":
        why = ("data.cache_frames is on" if data.cache_frames else
               "NVIDIA DALI is not installed" if not dali_available() else
               "no CUDA device" if device.type != "cuda" else
               "the split mixes frame folders and videos" if split_source(split) == "mixed" else "")
        use_dali = not why
        if why and notice and why not in _NOTICES:
            _NOTICES.add(why)  # one line per process and reason, not one per loader
            print(f"data.loader=auto: using the CPU loader ({why})", file=sys.stderr)
    if use_dali:
        return make_dali_loader(split, **args, device=device, threads=data.workers)
    if data.cache_frames:
        cache_split_frames(split, data.num_frames, data.image_size, data.workers, progress=progress)
    return make_loader(split, **args, workers=data.workers, pin_memory=device.type == "cuda")


def load_splits(data: DataConfig, progress: bool = True) -> tuple[Split, Split]:
    check_loader(data)
    root = resolve_root(data, progress)
    options = dict(data.options)
    if data.source is not None:
        options["source"] = data.source
    return tuple(load_split(data.dataset, root, s, data.fold, **options) for s in ("train", "test"))

"""From the data section of a config to the train and test splits, generating SynthDFER into a cache folder
when the config asks for the synthetic benchmark without a root."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch

from rdfer import environment
from rdfer.config import ConfigError, DataConfig
from rdfer.data.datasets import load_split
from rdfer.data.loader import make_loader
from rdfer.data.records import Split
from rdfer.errors import DataError


def resolve_root(data: DataConfig, progress: bool = True) -> Path:
    if data.root is not None:
        return Path(data.root)
    if data.dataset != "synthetic":
        raise ConfigError(f"data.root is required for dataset {data.dataset!r}: pass --root DIR")
    from rdfer.data.synth import generate

    name = f"{data.synth_preset}-seed{data.synth_seed}-{data.synth_noise_kind}{data.synth_noise:g}"
    return generate(
        data.synth_preset,
        environment.cache_dir() / "synth" / name,
        seed=data.synth_seed,
        noise=data.synth_noise,
        noise_kind=data.synth_noise_kind,
        progress=progress,
    )


def check_loader(data: DataConfig) -> None:
    """data.loader=dali needs NVIDIA DALI installed: say so before any data is generated or read."""
    from rdfer.data.dali import dali_available
    from rdfer.data.dali_build import extra_for_torch

    if data.loader == "dali" and not dali_available():
        raise ConfigError(
            f"data.loader=dali needs NVIDIA DALI: pip install 'rdfer[{extra_for_torch()}]', or use "
            "data.loader=auto|torch"
        )


def _decoder(split: Split, data: DataConfig, device: torch.device) -> tuple[str, str]:
    """('dali' or 'torch', why): data.loader's decoder. auto takes DALI on a CUDA device when it is installed
    and the split is all frame folders or all videos."""
    from rdfer.data.dali import dali_available, split_source

    if data.loader != "auto":
        return data.loader, f"data.loader={data.loader}"
    why = (
        "no CUDA device"
        if device.type != "cuda"
        else "NVIDIA DALI is not installed"
        if not dali_available()
        else "the split mixes frame folders and videos"
        if split_source(split) == "mixed"
        else ""
    )
    return ("torch", why) if why else ("dali", "DALI on the GPU")


_NOTICES: set[str] = set()


def _notice(text: str, notice: bool) -> None:
    if notice and text not in _NOTICES:
        _NOTICES.add(text)  # once per process: several runs in one process build the same loaders
        print(text, file=sys.stderr)


def _cached_loader(split: Split, data: DataConfig, decoder: str, device: torch.device, progress: bool, args):
    """The frame cache's loader, or (auto, when the store's disk lacks room) None and why."""
    from rdfer.data.cache import CacheSpaceError
    from rdfer.data.cached_loader import make_cached_loader

    try:
        return make_cached_loader(
            split,
            storage=data.cache,
            decoder=decoder,
            device=device,
            workers=data.workers,
            progress=progress,
            **args,
        ), ""
    except CacheSpaceError as e:
        if data.cache != "auto":
            raise ConfigError(
                f"data.cache={data.cache}: {e}; point $RDFER_FRAME_CACHE at a larger disk "
                "or set data.cache=off"
            ) from e
        return None, f"no room for the frame cache: {e}"


def build_loader(
    split: Split,
    data: DataConfig,
    *,
    train: bool,
    batch_size: int,
    seed: int,
    device: torch.device,
    sampler=None,
    augment: dict | None = None,
    notice: bool = True,
    progress: bool = True,
):
    """The clip loader the config asks for, saying which and why in one line (when `notice`).

    data.cache (not off): the frame cache (rdfer.data.cached_loader), filled by data.loader's decoder; auto
    falls back to decoding every epoch when the cache's disk lacks room. Otherwise DALI (data.loader dali, or
    auto where DALI can run) or the CPU DataLoader. All yield the same batches (rdfer.data.loader's doc).
    """
    from rdfer.data.dali import make_dali_loader

    args = dict(
        batch_size=batch_size,
        train=train,
        num_frames=data.num_frames,
        image_size=data.image_size,
        seed=seed,
        skip_bad=data.skip_bad,
        sampler=sampler,
        augment=augment,
    )
    decoder, decoder_why = _decoder(split, data, device)
    name = "DALI" if decoder == "dali" else "the CPU loader"
    what = f"{split.dataset}/{split.name} ({len(split)} clips)"
    why = "data.cache=off" if data.cache == "off" else "the split is empty"
    if data.cache != "off" and len(split):
        loader, why = _cached_loader(split, data, decoder, device, progress, args)
        if loader is not None:
            filler = name if decoder == "dali" or device.type != "cuda" else f"{name} ({decoder_why})"
            _notice(f"data: {what} from the frame cache in {loader.placement}; filled by {filler}", notice)
            return loader
    _notice(f"data: {what} decoded every epoch by {name} ({decoder_why}; {why})", notice)
    if decoder == "dali":
        return make_dali_loader(split, **args, device=device, threads=data.workers)
    return make_loader(split, **args, workers=data.workers, pin_memory=device.type == "cuda")


def load_splits(data: DataConfig, progress: bool = True) -> tuple[Split, Split]:
    check_loader(data)
    root = resolve_root(data, progress)
    options = dict(data.options)
    if data.source is not None:
        options["source"] = data.source
    return tuple(load_split(data.dataset, root, s, data.fold, **options) for s in ("train", "test"))


def check_splits(train: Split, test: Split, batch_size: int, skip_bad: bool, progress: bool = False) -> None:
    """Before any training: both splits hold clips, enough training clips for one batch, and their files
    exist (all of them, or with data.skip_bad at least one per split); without data.skip_bad, every frame
    image reads as a frame and every video opens (the quick check: rdfer.data.frames.verify_record)."""
    if len(train) < batch_size:
        raise ConfigError(
            f"data.batch_size ({batch_size} per process) is larger than the training split "
            f"({train.dataset}/{train.name}: {len(train)} clips): lower --batch-size"
        )
    for split in (train, test):
        if not len(split):
            raise DataError(f"the {split.name} split of {split.dataset} holds no clips")
        missing = [r.path for r in split.records if not Path(r.path).exists()]
        if missing and (not skip_bad or len(missing) == len(split)):
            raise DataError(
                f"{len(missing)} of the {len(split)} {split.name} clips are missing, e.g. {missing[0]}: "
                "check --root"
                + ("" if skip_bad else " (data.skip_bad=true leaves missing clips out and lists them)")
            )
    if not skip_bad:
        _check_frames(train, test, progress)


# Clips this process has checked and found good: the folds of one dataset (--folds) and the runs of one
# experiment share their clips, and each would otherwise check them all again.
_CHECKED: set[str] = set()


def _check_frames(train: Split, test: Split, progress: bool) -> None:
    from rdfer.data.summary import verify_splits

    todo = {
        s.name: dataclasses.replace(s, records=[r for r in s.records if str(r.path) not in _CHECKED])
        for s in (train, test)
    }
    found = verify_splits(todo, os.cpu_count() or 1, whole=False, progress=progress)
    bad = {p["path"] for p in found}
    _CHECKED.update(str(r.path) for s in todo.values() for r in s.records if str(r.path) not in bad)
    if found:
        clips = len({(p["split"], p["key"]) for p in found})
        raise DataError(
            f"{clips} of the {len(train) + len(test)} clips do not read, e.g. {found[0]['problem']}: fix or "
            "remove them (python -m rdfer.data summary --verify lists every problem; data.skip_bad=true "
            "leaves them out)"
        )

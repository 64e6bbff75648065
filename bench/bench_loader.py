"""Clips per second of the package's three clip loaders over the same training clips, in one run: the frame
cache (rdfer.data.cache: batches gathered from frames decoded once), DALI decoding every epoch, and the CPU
loader decoding every epoch (a DataLoader with one worker per core: the twin). Ratios against the CPU loader.

All read SynthDFER `dfew-shaped` frame folders (JPEG frames at DFEW's face-crop size), training order and
augmentation parameters on, one pass over the clips per timed round; the clips arrive on the device.
GPU: T = 64 at 112x112, B = 32; the cache where data.cache=auto puts it (the GPU, for these clips); DALI with
nvJPEG. CPU: T = 16 at 112x112, B = 8 (about a minute in all): the cache in host memory, DALI on the CPU (a
functional check there: DALI's point is the GPU). The cache's one-time fill is timed apart and printed too.

    python -m pytest bench/bench_loader.py --benchmark-only
RDFER_BENCH_ROOT=DIR times an existing dfew-shaped folder (`python -m rdfer.data synth --preset dfew-shaped`);
without it, 56 training clips with dfew-shaped's frame size and JPEG settings are generated into a temporary
folder. The frame cache's store goes to a temporary folder as well.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from _timing import write_after_run

from rdfer.data.dali import dali_available
from rdfer.data.datasets import load_split
from rdfer.data.loader import default_workers, make_loader
from rdfer.data.synth import generate

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
T, SIZE = (64, 112) if GPU else (16, 112)
BATCH = 32 if GPU else 8
IMPLS = ["torch", "dali", "cache"]
_SECONDS: dict[str, float] = {}
_CLIPS: dict[str, int] = {}
_NOTES: list[str] = []


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = os.environ.get("RDFER_BENCH_ROOT")
    if root is None:
        root = generate(
            "dfew-shaped",
            tmp_path_factory.mktemp("dfew-shaped"),
            dfew_frame_counts=None,
            train_per_class=(8,) * 7,
            test_per_class=(0,) * 7,
            progress=False,
        )
    return load_split("synthetic", Path(root), "train")


@pytest.fixture(scope="module")
def frame_cache(tmp_path_factory):
    before = os.environ.get("RDFER_FRAME_CACHE")
    os.environ["RDFER_FRAME_CACHE"] = str(tmp_path_factory.mktemp("frame-cache"))
    yield
    if before is None:
        del os.environ["RDFER_FRAME_CACHE"]
    else:
        os.environ["RDFER_FRAME_CACHE"] = before


def _loader(impl: str, split):
    kw = dict(batch_size=BATCH, train=True, num_frames=T, image_size=SIZE, seed=0)
    if impl == "torch":
        return make_loader(split, workers=default_workers(), pin_memory=GPU, **kw)
    if impl == "dali":
        from rdfer.data.dali import make_dali_loader

        return make_dali_loader(split, device=DEVICE, threads=default_workers(), prefetch=2, **kw)
    from rdfer.data.cached_loader import make_cached_loader

    t0 = time.perf_counter()
    loader = make_cached_loader(
        split,
        storage="auto",
        decoder="dali" if GPU and dali_available() else "torch",
        device=DEVICE,
        workers=default_workers(),
        progress=False,
        **kw,
    )
    _NOTES.append(
        f"  cache fill + load: {time.perf_counter() - t0:.1f} s for {len(split)} clips "
        f"(kept in: {loader.storage})"
    )
    return loader


def _epoch(loader) -> int:
    clips = 0
    for batch in loader:
        frames = batch["frames"].to(DEVICE, non_blocking=True)
        clips += frames.shape[0]
    if GPU:
        torch.cuda.synchronize()
    return clips


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    lines = [f"clip loaders, {DEVICE}, B={BATCH}, T={T}, {SIZE}x{SIZE}, {default_workers()} workers/threads:"]
    for impl, seconds in _SECONDS.items():
        lines.append(f"  {impl}: {_CLIPS[impl] / seconds:.1f} clips/s")
    for impl in ("dali", "cache"):
        if {impl, "torch"} <= set(_SECONDS):
            lines.append(f"  {impl} / torch: x{_SECONDS['torch'] / _SECONDS[impl]:.2f}")
    write_after_run(request, lines + _NOTES)


@pytest.mark.usefixtures("frame_cache")
@pytest.mark.parametrize("impl", IMPLS)
def test_loader_throughput(benchmark, split, impl: str) -> None:
    if impl == "dali":
        pytest.importorskip(
            "nvidia.dali",
            reason="nvidia-dali is not installed (pip install 'rdfer[dali-cu12]' or 'rdfer[dali-cu13]')",
        )
    loader = _loader(impl, split)
    _CLIPS[impl] = _epoch(loader)  # warm-up: DALI builds its pipeline, the page cache fills
    benchmark.group = "clip loader"
    benchmark.pedantic(lambda: _epoch(loader), rounds=3 if GPU else 2, warmup_rounds=0)
    if benchmark.stats is None:
        return
    _SECONDS[impl] = benchmark.stats.stats.min
    benchmark.extra_info["clips/s"] = _CLIPS[impl] / _SECONDS[impl]

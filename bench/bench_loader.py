"""Clips per second of the DALI clip loader against the CPU loader (a DataLoader with one worker per core),
both reading SynthDFER `dfew-shaped` frame folders: JPEG frames at 112x112, T = 64 frames per clip, training
augmentation on, one pass over the clips per timed round.

    python -m pytest bench/bench_loader.py --benchmark-only
RDFER_BENCH_ROOT=DIR times an existing dfew-shaped folder (`python -m rdfer.data synth --preset dfew-shaped`);
without it, 56 training clips with dfew-shaped's frame size and JPEG settings are generated into a temporary
folder. DALI decodes on the GPU (nvJPEG, device="mixed") when there is one, else on the CPU (a functional
check there: DALI's point is the GPU).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from _timing import write_after_run

from rdfer.data.datasets import load_split
from rdfer.data.loader import default_workers, make_loader
from rdfer.data.synth import generate

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
T, SIZE = 64, 112
BATCH = 32 if GPU else 8
IMPLS = ["torch", "dali"]
_SECONDS: dict[str, float] = {}
_CLIPS: dict[str, int] = {}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = os.environ.get("RDFER_BENCH_ROOT")
    if root is None:
        root = generate("dfew-shaped", tmp_path_factory.mktemp("dfew-shaped"), dfew_frame_counts=None,
                        train_per_class=(8,) * 7, test_per_class=(0,) * 7, progress=False)
    return load_split("synthetic", Path(root), "train")


def _loader(impl: str, split):
    kw = dict(batch_size=BATCH, train=True, num_frames=T, image_size=SIZE, seed=0)
    if impl == "torch":
        return make_loader(split, workers=default_workers(), pin_memory=GPU, **kw)
    from rdfer.data.dali import make_dali_loader

    return make_dali_loader(split, device=DEVICE, threads=default_workers(), prefetch=2, **kw)


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
    lines = [f"clip loader, {DEVICE}, B={BATCH}, T={T}, {SIZE}x{SIZE}, {default_workers()} workers/threads:"]
    for impl, seconds in _SECONDS.items():
        lines.append(f"  {impl}: {_CLIPS[impl] / seconds:.1f} clips/s")
    if set(IMPLS) <= set(_SECONDS):
        lines.append(f"  dali / torch: x{_SECONDS['torch'] / _SECONDS['dali']:.2f}")
    write_after_run(request, lines)


@pytest.mark.parametrize("impl", IMPLS)
def test_loader_throughput(benchmark, split, impl: str) -> None:
    if impl == "dali":
        pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed (pip install 'rdfer[dali]')")
    loader = _loader(impl, split)
    _CLIPS[impl] = _epoch(loader)  # warm-up: DALI builds its pipeline, the page cache fills
    benchmark.group = "clip loader"
    benchmark.pedantic(lambda: _epoch(loader), rounds=3 if GPU else 2, warmup_rounds=0)
    if benchmark.stats is None:
        return
    _SECONDS[impl] = benchmark.stats.stats.min
    benchmark.extra_info["clips/s"] = _CLIPS[impl] / _SECONDS[impl]

"""Training clips per second of one full training step (rdfer.training.train_step: forward of both streams,
the selector's assessment, the weighted loss, backward, the fused AdamW update and the selector's commit), on
frames already on the device as the frame cache hands them over, with augmentation inside the gather.

Variants, measured in one run, with ratios against the first:
- twins-fp32: every op's PyTorch twin (RDFER_KERNELS=reference), full precision;
- fast-fp32 / fast-bf16: every fast path (the C++/CUDA gathers, the Triton gate and agreement), bf16 autocast
  on a GPU (fp32 on the CPU, where bf16 autocast is slower);
- fast-bf16-compile: the same with the model compiled by torch.compile (GPU only: compiling on 2 CPU cores
  takes minutes).
Also: the robust step's share of a step (the selector's assess + commit, timed alone on the same outputs).

GPU: the dfew config (ResNet-18 in both streams, T = 64 frames at 112x112, K = 4 clips of 4, B = 128: the
issue's 1,500 clips/s target for one DFEW fold in 10 minutes on an H200). CPU: the packaged quick config (the
small encoder, T = 32 at 64x64, B = 16), a few rounds, about a minute in all.

    python -m pytest bench/bench_step.py --benchmark-only
"""

from __future__ import annotations

import time

import pytest
import torch
from _timing import write_after_run

from rdfer import distributed
from rdfer.config import load_config
from rdfer.data.augment import clip_augment_params
from rdfer.data.records import ClipRecord, Split
from rdfer.ops.augment import params_to_tensor
from rdfer.training import EpochTotals, learner, train_step

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
VARIANTS = ["twins-fp32", "fast-bf16" if GPU else "fast-fp32"] + (["fast-bf16-compile"] if GPU else [])
STEPS = 10 if GPU else 3  # timed steps per round
_RATE: dict[str, float] = {}
_NOTES: list[str] = []


def config(variant: str):
    base = ["data.dataset=dfew", "data.root=unused"] if GPU else []
    amp = "bf16" if variant.endswith("bf16") or "bf16-" in variant else "off"
    return load_config(
        "dfew" if GPU else "quick", [*base, f"run.amp={amp}", "run.out=unused", "optim.epochs=1"]
    )


def make_run(variant: str, monkeypatch):
    monkeypatch.setenv("RDFER_KERNELS", "reference" if variant.startswith("twins") else "auto")
    cfg = config(variant)
    b, t, size = cfg.data.batch_size, cfg.data.num_frames, cfg.data.image_size
    split = Split("bench", "train", CLASSES, [ClipRecord(i, str(i), "unused", i % 7) for i in range(4 * b)])
    torch.manual_seed(0)
    run = learner(cfg, distributed.World(), DEVICE, split)
    if variant.endswith("compile"):
        run.step_model = torch.compile(run.model)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g).to(DEVICE)
    augment = params_to_tensor([clip_augment_params(0, 0, i, size, jitter=0.4) for i in range(b)])
    batch = {"frames": frames, "label": torch.arange(b) % 7, "sample_id": torch.arange(b), "augment": augment}
    return run, batch


def steps(run, batch, n: int) -> None:
    totals = EpochTotals(DEVICE)
    for _ in range(n):
        train_step(run, batch, totals)
    if GPU:
        torch.cuda.synchronize()


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    lines = [f"training step, {DEVICE}, {'dfew' if GPU else 'quick'} config:"]
    for variant, rate in _RATE.items():
        ratio = f" (x{rate / _RATE['twins-fp32']:.2f} twins-fp32)" if "twins-fp32" in _RATE else ""
        lines.append(f"  {variant}: {rate:.1f} clips/s{ratio}")
    write_after_run(request, lines + _NOTES)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step(benchmark, monkeypatch, variant: str) -> None:
    run, batch = make_run(variant, monkeypatch)
    steps(run, batch, 2)  # warm-up: cudnn.benchmark, Triton and torch.compile compile here
    benchmark.group = "training step"
    benchmark.pedantic(lambda: steps(run, batch, STEPS), rounds=3, warmup_rounds=0)
    if benchmark.stats is None:
        return
    _RATE[variant] = STEPS * batch["frames"].shape[0] / benchmark.stats.stats.min
    benchmark.extra_info["clips/s"] = _RATE[variant]
    if variant != VARIANTS[-1]:
        return
    out = run.step_model(batch["frames"].to(DEVICE), batch["augment"])
    labels, ids = batch["label"].to(DEVICE), batch["sample_id"].to(DEVICE)
    ok = torch.tensor(True, device=DEVICE)
    t0 = time.perf_counter()
    for _ in range(20):
        assessed = run.selector.assess(out, labels, ids)
        run.selector.commit(ids, assessed.rows, ok)
    if GPU:
        torch.cuda.synchronize()
    robust = (time.perf_counter() - t0) / 20
    step = benchmark.stats.stats.min / STEPS
    _NOTES.append(
        f"  the selector's assess + commit: {1e3 * robust:.2f} ms, {100 * robust / step:.1f}% of a "
        f"{variant} step ({1e3 * step:.1f} ms)"
    )

"""The training step: no host synchronisation inside a step on a GPU (so data loading overlaps compute), and a
non-finite step skipped by the optimiser on the device (CPU and GPU). GPU cases are marked `cuda`; the
no-sync test is the GPU's alone (torch.cuda.set_sync_debug_mode has no CPU counterpart)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DEVICES

from rdfer import distributed
from rdfer.config import load_config
from rdfer.data.augment import clip_augment_params
from rdfer.data.records import ClipRecord, Split
from rdfer.ops.augment import params_to_tensor
from rdfer.training import EpochTotals, learner, train_step

CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


def small_run(*overrides, device="cuda"):
    amp = "bf16" if device == "cuda" else "off"
    cfg = load_config("quick", ["run.out=unused", "optim.epochs=1", f"run.amp={amp}", *overrides])
    b, t, size = cfg.data.batch_size, cfg.data.num_frames, cfg.data.image_size
    split = Split("gpu", "train", CLASSES, [ClipRecord(i, str(i), "unused", i % 7) for i in range(4 * b)])
    torch.manual_seed(0)
    run = learner(cfg, distributed.World(), torch.device(device), split)
    frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, device=device)
    augment = params_to_tensor([clip_augment_params(0, 0, i, size, jitter=0.4) for i in range(b)])
    batch = {"frames": frames, "label": torch.arange(b) % 7, "sample_id": torch.arange(b), "augment": augment}
    return run, batch


@pytest.mark.cuda
@pytest.mark.parametrize("robust", ["robust.enabled=true", "robust.enabled=false"])
def test_a_training_step_makes_no_host_sync(robust):
    run, batch = small_run(robust)
    totals = EpochTotals(run.device)
    for _ in range(2):  # warm-up: cudnn.benchmark and Triton compile here, and may synchronise
        train_step(run, batch, totals)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            train_step(run, batch, totals)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert int(totals.sums[3]) == 0  # no non-finite step


@pytest.mark.parametrize("device", DEVICES)
def test_a_non_finite_step_is_skipped_on_the_device(monkeypatch, device):
    run, batch = small_run(device=device)
    totals = EpochTotals(run.device)
    train_step(run, batch, totals)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    import rdfer.training as training

    real = training.rdfer_loss
    monkeypatch.setattr(training, "rdfer_loss", lambda *a, **k: (real(*a, **k)[0] * math.nan, {}))
    train_step(run, batch, totals)
    for name, value in run.model.state_dict().items():
        if value.is_floating_point() and "running" not in name and "num_batches" not in name:
            assert torch.equal(value, before[name]), name
    assert int(totals.sums[3]) == 1 and int(totals.bad_run) == 1

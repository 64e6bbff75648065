"""Convergence (Liger-Kernel style): a mini RDFER trained a few steps with the Triton kernels (the attention
gate of both streams, the agreement weights) must follow the twin-only run's loss curve and end at the same
weights. On CPU the kernels run under the Triton interpreter."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from rdfer.config import load_config
from rdfer.experiments.baselines.agreement import AgreementSelector
from rdfer.kernels import agreement as agreement_kernels
from rdfer.kernels import attention_gate as gate_kernels
from rdfer.models import RDFER
from rdfer.ops.agreement import AgreementParams
from rdfer.robust.loss import rdfer_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STEPS, BATCH, FRAMES, CLASSES = 4, 4, 16, 7


def mini_config():
    return load_config(
        None,
        [
            "model.encoder=small",
            "model.feature_dim=16",
            "model.lstm_hidden=16",
            "model.heads=2",
            f"data.num_frames={FRAMES}",
            "model.synopsis_frames=8",
            "model.clip_length=2",
            "model.clips=4",
        ],
    )


def train(kernels: bool, monkeypatch, count_launches) -> tuple[list[float], dict[str, torch.Tensor], dict]:
    monkeypatch.setenv("RDFER_KERNELS", "fast" if kernels else "reference")  # fast: no silent fallback
    if kernels and DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    counts = count_launches(
        {
            "gate": (gate_kernels, "_gate_fwd_kernel"),
            "gate_bwd": (gate_kernels, "_gate_bwd_kernel"),
            "agreement": (agreement_kernels, "_agreement_kernel"),
        }
    )
    cfg = mini_config()
    torch.manual_seed(0)
    model = RDFER(cfg, [str(c) for c in range(CLASSES)]).to(DEVICE).train()
    # SGD: its steps scale with the gradients, so rounding-level differences stay rounding-level (Adam's first
    # steps are sign(g) * lr, which turns a rounding difference in a near-zero gradient into a full step).
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2 * BATCH, FRAMES, 3, 24, 24), dtype=torch.uint8, generator=g).to(DEVICE)
    labels = torch.randint(0, CLASSES, (2 * BATCH,), generator=g).to(DEVICE)
    robust = load_config(None, ["robust.warmup=0.25"]).robust
    params = AgreementParams(noisy_weight=0.1, relabel=True, relabel_margin=0.3)
    selector = AgreementSelector(robust, 2 * BATCH, epochs=STEPS, device=DEVICE, params=params)
    losses = []
    for step in range(STEPS):
        ids = torch.arange(BATCH, device=DEVICE) + BATCH * (step % 2)
        out = model(frames[ids], generator=torch.Generator().manual_seed(100 + step))
        stats = selector.assess(out, labels[ids], ids)
        selector.commit(ids, stats.rows, torch.tensor(True, device=DEVICE))
        selector.end_epoch(step)  # warm after the first step, as robust.warmup=0.25 of 4
        loss, _ = rdfer_loss(out, stats.target, stats.weight, cfg.optim, FRAMES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, dict(counts)


def test_mini_rdfer_trains_the_same_with_and_without_kernels(monkeypatch, count_launches):
    with monkeypatch.context() as m:
        twin_losses, twin_state, twin_counts = train(False, m, count_launches)
    fast_losses, fast_state, fast_counts = train(True, monkeypatch, count_launches)
    assert twin_counts == {"gate": 0, "gate_bwd": 0, "agreement": 0}
    # both streams' gates forward and backward, and the agreement, every step
    assert fast_counts == {"gate": 2 * STEPS, "gate_bwd": 2 * STEPS, "agreement": STEPS}
    assert len(set(twin_losses)) == STEPS  # the model moves between steps
    torch.testing.assert_close(torch.tensor(fast_losses), torch.tensor(twin_losses), rtol=1e-4, atol=1e-5)
    for name, value in twin_state.items():
        torch.testing.assert_close(fast_state[name], value, rtol=1e-3, atol=1e-4, msg=name)

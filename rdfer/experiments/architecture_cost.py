"""What each variant's training step costs, timed side by side (rdfer.experiments.architecture).

The runs' own clips/s come from epochs minutes apart; on a shared machine whatever else runs then moves them
by 2x. Here every variant takes the same real training step (rdfer.training.train_step: forward, loss,
backward, update) on the same batch, the variants in turn for several rounds, and each keeps its fastest
round: the least disturbed, so the ratios between variants hold even when the machine is busy."""

from __future__ import annotations

import time

import torch

from rdfer import distributed
from rdfer.config import Config, load_config
from rdfer.data.augment import clip_augment_params
from rdfer.data.records import ClipRecord, Split
from rdfer.ops.augment import params_to_tensor


def _batch(cfg: Config) -> dict:
    b, t, size = cfg.data.batch_size, cfg.data.num_frames, cfg.data.image_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)
    augment = params_to_tensor(
        [clip_augment_params(0, 0, i, size, jitter=cfg.data.color_jitter) for i in range(b)]
    )
    return {"frames": frames, "label": torch.arange(b) % 7, "sample_id": torch.arange(b), "augment": augment}


def step_rates(base: Config, variants: dict, classes, rounds: int = 5, steps: int = 3) -> dict[str, float]:
    """Training clips/s of one step per variant, {name: rate}; `variants` maps a name to (config overrides,
    make_model or None). CPU, the base config's batch."""
    from rdfer.training import EpochTotals, learner, train_step

    device = torch.device("cpu")
    cfg0 = load_config(base.to_dict(), ["run.out=unused"])
    split = Split(
        "bench", "train", tuple(classes), [ClipRecord(i, str(i), "unused", i % 7) for i in range(64)]
    )
    batch, runs = _batch(cfg0), {}
    for name, (overrides, make_model) in variants.items():
        torch.manual_seed(0)
        cfg = load_config(cfg0.to_dict(), list(overrides))
        runs[name] = learner(cfg, distributed.World(), device, split, make_model=make_model)
        train_step(runs[name], batch, EpochTotals(device))  # warm-up: first-call allocations
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            totals = EpochTotals(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(run, batch, totals)
            best[name] = min(best[name], time.perf_counter() - t0)
    n = cfg0.data.batch_size * steps
    return {name: n / seconds for name, seconds in best.items()}

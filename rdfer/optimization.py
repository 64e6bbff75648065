"""The optimiser's parameter groups and the learning-rate schedule of docs/method.md §4."""

from __future__ import annotations

import math

import torch

from rdfer.config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(o: OptimConfig, steps_per_epoch: int, restart: tuple[int, float] | None = None):
    """Per-iteration linear warm-up, then cosine down to min_lr, as a factor of optim.lr.

    `restart` (step, factor) re-plans an extended run: from that step on, a cosine from the factor the run had
    reached down to min_lr over the steps that remain."""
    total = o.epochs * steps_per_epoch
    warm = int(o.warmup_epochs * steps_per_epoch)
    floor = o.min_lr / o.lr
    begin, top = restart if restart is not None else (warm, 1.0)

    def factor(step: int) -> float:
        if step < warm and restart is None:
            return (step + 1) / warm
        progress = (step - begin) / max(total - begin, 1)
        return floor + (top - floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    return factor

"""Confident Learning's estimate of the label-noise share (Northcutt et al., 2021; docs/method.md §3)."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def confident_off_diagonal(probs: Tensor, labels: Tensor) -> Tensor:
    """[n] bool: the samples the confident joint puts off its diagonal. probs [n, C] (each sample's predicted
    probabilities), labels [n] (given). Class j's threshold is the mean p_j over the samples labelled j; a
    sample counts for the most probable class whose threshold it reaches, and is off the diagonal when that
    class is not its label (a sample that reaches no threshold counts nowhere)."""
    c = probs.shape[1]
    onehot = torch.nn.functional.one_hot(labels, c).to(probs.dtype)
    thresholds = (onehot * probs).sum(0) / onehot.sum(0).clamp(min=1)  # [C]
    above = probs >= thresholds
    star = torch.where(above, probs, -1.0).argmax(1)
    return above.any(1) & (star != labels)

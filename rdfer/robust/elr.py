"""Early-Learning Regularisation (Liu et al., NeurIPS 2020; docs/method.md §3): a loss term of the `rdfer`
method, beside its selection.

Each training sample keeps a target t_i, an EMA (momentum robust.elr_beta) of its detached video probabilities
over the epochs' forwards, clamped to [1e-4, 1 - 1e-4] and renormalised; it starts at 0. Every step first
moves the batch's targets by the current forward, then the loss adds

    robust.elr_lambda * mean_i log(1 - <p_i, t_i>)

with p_i the (clamped) softmax of the video logits, with gradient. Minimising it pulls p_i towards what the
network predicted early, before it memorised the wrong labels, and the term's gradient cancels the
cross-entropy's pull towards a label the targets disagree with. With robust.enabled=false the targets are
still kept but the term is left out: plain cross-entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor

CLAMP = 1e-4  # the published code's clamp of the probabilities


def clamped_probs(logits: Tensor) -> Tensor:
    """[B, C] softmax of logits clamped to [CLAMP, 1 - CLAMP], so that log(1 - <p, t>) stays finite."""
    return logits.float().softmax(-1).clamp(CLAMP, 1.0 - CLAMP)


def elr_term(logits: Tensor, target: Tensor) -> Tensor:
    """mean_i log(1 - <p_i, t_i>): logits [B, C] with gradient, target [B, C] detached."""
    return (1.0 - (clamped_probs(logits) * target).sum(-1)).log().mean()


class ElrTargets:
    """Each sample's ELR target: the EMA of its clamped, renormalised video probabilities, 0 until first seen.
    `step` is pure (the batch's new targets, stored later by `store` where the step was good)."""

    def __init__(self, num_samples: int, beta: float, device: torch.device | str = "cpu"):
        self.num_samples, self.beta, self.device = num_samples, beta, torch.device(device)
        self.targets: Tensor | None = None  # [N, C], allocated once the number of classes is seen
        self.num_classes: int | None = None

    @torch.no_grad()
    def step(self, logits: Tensor, ids: Tensor) -> Tensor:
        probs = clamped_probs(logits.detach())
        self.num_classes = probs.shape[1]
        old = self.targets[ids] if self.targets is not None else torch.zeros_like(probs)
        return self.beta * old + (1.0 - self.beta) * probs / probs.sum(-1, keepdim=True)

    @torch.no_grad()
    def store(self, ids: Tensor, target: Tensor, ok: Tensor) -> None:
        if self.targets is None:
            self.targets = torch.zeros(self.num_samples, target.shape[1], device=self.device)
        self.targets[ids] = torch.where(ok, target, self.targets[ids])

    def state_dict(self) -> Tensor:
        return self.targets.cpu() if self.targets is not None else torch.zeros(self.num_samples, 0)

    def load_state_dict(self, targets: Tensor) -> None:
        if targets.shape[0] != self.num_samples:
            raise ValueError(
                f"the ELR targets hold {targets.shape[0]} samples, this split {self.num_samples}"
            )
        if targets.shape[1] == 0:
            self.targets, self.num_classes = None, None
        else:
            self.targets, self.num_classes = targets.to(self.device), targets.shape[1]

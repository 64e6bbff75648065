"""Early-Learning Regularisation (Liu et al., NeurIPS 2020; docs/method.md §3): a loss term, not a selection.

Each training sample keeps a target t_i, an EMA (momentum robust.elr_beta) of its detached video probabilities
over the epochs' forwards, clamped to [1e-4, 1 - 1e-4] and renormalised; it starts at 0. Every step first
moves the batch's targets by the current forward, then the loss adds

    robust.elr_lambda * mean_i log(1 - <p_i, t_i>)

with p_i the (clamped) softmax of the video logits, with gradient. Minimising it pulls p_i towards what the
network predicted early, before it memorised the wrong labels, and the term's gradient cancels the
cross-entropy's pull towards a label the targets disagree with. Every weight stays 1.

The `rdfer` method's statistics and decisions are still kept and judged, not acted on (as for plain
cross-entropy): the noise score is the mean loss, the categories its suspects. With robust.enabled=false the
targets are still kept but the term is left out: plain cross-entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rdfer.robust.exclusion import ExclusionSelector
from rdfer.robust.selector import Assessed

CLAMP = 1e-4  # the published code's clamp of the probabilities


def clamped_probs(logits: Tensor) -> Tensor:
    """[B, C] softmax of logits clamped to [CLAMP, 1 - CLAMP], so that log(1 - <p, t>) stays finite."""
    return logits.float().softmax(-1).clamp(CLAMP, 1.0 - CLAMP)


def elr_term(logits: Tensor, target: Tensor) -> Tensor:
    """mean_i log(1 - <p_i, t_i>): logits [B, C] with gradient, target [B, C] detached."""
    return (1.0 - (clamped_probs(logits) * target).sum(-1)).log().mean()


class ElrSelector(ExclusionSelector):
    def __init__(self, robust, num_samples, epochs, device="cpu"):
        super().__init__(robust, num_samples, epochs, device)
        self.term_on = (
            robust.enabled
        )  # off: plain cross-entropy, as robust.enabled=false means for every method
        self.enabled = False  # the `rdfer` decisions are reported, never turned into weights
        self.targets: Tensor | None = None  # [N, C], allocated once the number of classes is seen
        self.num_classes: int | None = None

    @torch.no_grad()
    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        base = super().assess(out, labels, ids)
        probs = clamped_probs(out["logits"].detach())
        self.num_classes = probs.shape[1]
        old = self.targets[ids] if self.targets is not None else torch.zeros_like(probs)
        beta = self.robust.elr_beta
        target = beta * old + (1.0 - beta) * probs / probs.sum(-1, keepdim=True)
        base.rows = torch.cat([target, base.rows], 1)
        if self.term_on:
            base.elr_target, base.elr_lambda = target, self.robust.elr_lambda
        return base

    @torch.no_grad()
    def commit(self, ids: Tensor, rows: Tensor, ok: Tensor) -> None:
        c = self.num_classes
        if c is None:
            raise RuntimeError("ElrSelector.commit before assess: the number of classes is not known")
        if self.targets is None:
            self.targets = torch.zeros(len(self), c, device=self.weight.device)
        self.targets[ids] = torch.where(ok, rows[:, :c], self.targets[ids])
        super().commit(ids, rows[:, c:], ok)

    def state_dict(self) -> dict:
        targets = self.targets if self.targets is not None else torch.zeros(len(self), 0)
        return {**super().state_dict(), "elr_targets": targets.cpu()}

    def load_state_dict(self, state: dict) -> None:
        targets = state["elr_targets"]
        if targets.shape[0] != len(self):
            raise ValueError(f"the ELR targets hold {targets.shape[0]} samples, this split {len(self)}")
        super().load_state_dict(state)
        if targets.shape[1] == 0:
            self.targets, self.num_classes = None, None
        else:
            self.targets, self.num_classes = targets.to(self.weight.device), targets.shape[1]

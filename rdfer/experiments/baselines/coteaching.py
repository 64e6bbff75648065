"""Co-teaching between the two streams (Han et al., NeurIPS 2018; docs/method.md §3).

Every step, each stream ranks the batch by its own video loss on the given labels and the other stream trains
only on the (1 - rate) share it ranks lowest: the detail stream's heads on the synopsis stream's picks and the
synopsis stream's heads on the detail stream's. Two views with their own encoders and inputs make different
mistakes, so a sample one of them has begun to memorise is still left out by the other. The rate is the share
of wrong labels Confident Learning estimates from the mean probabilities so far (at most MAX_RATE), ramped in
linearly over the first robust.warmup of the epochs, as co-teaching ramps its forget rate. With cross=False
every head trains on the picks of the network's output (self-teaching, one network).

Per epoch, the samples flagged noisy are that share with the highest mean loss; the noise score is the mean
loss. No host synchronisation inside a step: the share becomes a count on the host at the epoch's end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rdfer.experiments.baselines.confident import confident_off_diagonal
from rdfer.robust.categories import EASY, NOISY
from rdfer.robust.selector import Assessed, EpochNotes, StatsSelector, renormalised
from rdfer.robust.stats import LOSS, PROBS

MAX_RATE = 0.5


def small_loss_mask(loss: Tensor, drop: int) -> Tensor:
    """[B] float32: 0 for the `drop` highest losses of the batch, 1 for the others."""
    rank = loss.argsort(descending=True).argsort()
    return (rank >= drop).float()


class CoTeachingSelector(StatsSelector):
    def __init__(self, robust, num_samples, epochs, device="cpu", *, cross: bool = True):
        super().__init__(robust, num_samples, epochs, device)
        self.cross = cross
        self.rate = 0.0  # the share of each batch left out in this epoch
        self.estimate = 0.0

    @torch.no_grad()
    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        base = super().assess(out, labels, ids)
        drop = round(self.rate * labels.numel())
        if not self.enabled or drop == 0:
            return base
        loss = lambda key: F.cross_entropy(out[key].detach().float(), labels, reduction="none")  # noqa: E731
        cap = self.robust.weight_cap
        if self.cross:
            base.weight = renormalised(small_loss_mask(loss("synopsis_video_logits"), drop), cap)
            base.stream_weight = renormalised(small_loss_mask(loss("detail_video_logits"), drop), cap)
        else:
            base.weight = renormalised(small_loss_mask(loss("logits"), drop), cap)
        return base

    def decide(self, epoch: int) -> EpochNotes:
        whole = self.stats.mean()
        seen = ~whole[:, LOSS].isnan()
        self.score = whole[:, LOSS].nan_to_num(0.0)
        self.started = True
        off = confident_off_diagonal(whole[seen, PROBS:], self.stats.labels[seen])
        self.estimate = float(off.float().mean())
        ramp = min(1.0, (epoch + 1) / max(round(self.robust.warmup * self.epochs), 1))
        self.rate = min(self.estimate, MAX_RATE) * ramp
        k = round(self.rate * int(seen.sum()))
        noisy = torch.zeros_like(seen)
        if k:
            noisy[torch.where(seen, self.score, -float("inf")).topk(k).indices] = True
        self.category = torch.where(noisy, NOISY, torch.where(seen, EASY, -1))
        return EpochNotes({"noise_estimate": self.estimate, "drop_rate": self.rate})

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "rate": torch.tensor(self.rate),
            "estimate": torch.tensor(self.estimate),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rate, self.estimate = float(state["rate"]), float(state["estimate"])

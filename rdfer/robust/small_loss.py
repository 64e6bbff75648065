"""The small-loss baseline (docs/method.md §3): DivideMix's selection step without its semi-supervised part.
After a warm-up of robust.warmup of the epochs, each epoch a 2-component Gaussian mixture of the per-sample
loss, averaged over every epoch so far, splits the samples; those more likely in the high-loss component are
noisy (robust.noisy_weight), the others clean (weight 1). The noise score is that mean loss.

The mean since the first epoch, not the last epoch's loss: on a single epoch's loss the mixture's first split
kept 12% of the samples at 40% noise and training collapsed."""

from __future__ import annotations

import torch

from rdfer.ops.agreement import EASY, NOISY
from rdfer.robust.gmm import gmm2
from rdfer.robust.selector import EpochNotes
from rdfer.robust.stats import LOSS, StatsSelector


class SmallLossSelector(StatsSelector):
    def decide(self, epoch: int) -> EpochNotes:
        loss = self.stats.mean()[:, LOSS]
        seen = ~loss.isnan()
        self.score = loss.nan_to_num(0.0)
        self.category = torch.where(seen, EASY, -1)
        if epoch + 1 < max(round(self.robust.warmup * self.epochs), 1):
            return EpochNotes()
        self.started = True
        noisy = torch.zeros_like(seen)
        noisy[seen] = gmm2(loss[seen]).high > 0.5
        self.category = torch.where(noisy, NOISY, self.category)
        self.weight = torch.where(noisy, self.robust.noisy_weight, 1.0)
        return EpochNotes({"excluded": float(noisy.float().mean())})

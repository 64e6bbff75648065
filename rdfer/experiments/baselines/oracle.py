"""The oracle (docs/method.md §3): the truly noisy samples, known to the noise experiment, train with
robust.noisy_weight from the first step; the others with 1. The ceiling a selection can reach. Its noise score
is the plain mean loss, its categories the truth."""

from __future__ import annotations

import torch
from torch import Tensor

from rdfer.robust.categories import EASY, NOISY
from rdfer.robust.selector import EpochNotes, StatsSelector
from rdfer.robust.stats import LOSS


class OracleSelector(StatsSelector):
    def __init__(self, robust, num_samples, epochs, device="cpu", *, noisy: Tensor):
        super().__init__(robust, num_samples, epochs, device)
        if noisy.shape != (num_samples,):
            raise ValueError(
                f"the oracle needs one noisy flag per training sample ({num_samples}), got {noisy.shape}"
            )
        self.noisy = noisy.to(self.weight.device, torch.bool)
        self.weight = torch.where(self.noisy, robust.noisy_weight, 1.0)
        self.started = True

    def decide(self, epoch: int) -> EpochNotes:
        self.score = self.stats.mean()[:, LOSS].nan_to_num(0.0)
        self.category = torch.where(self.noisy, NOISY, EASY)
        return EpochNotes()

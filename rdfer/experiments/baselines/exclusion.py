"""The `exclusion` baseline (docs/method.md §3; the package's method until 2026-12): a ramped, re-decided
exclusion of the samples with suspect labels.

Each epoch, from SampleStats:
1. Warm-up, ended by a measured signal: the per-sample losses of the last two epochs rank the samples alike
   (Spearman >= WARMUP_CORR), so the ranking is the network's and not the noise of one epoch's
   augmentation and sampling. Never before the second epoch.
2. The share to exclude: Confident Learning's off-diagonal share on the mean probabilities since the first
   epoch,
   at most MAX_SHARE, ramped in over RAMP epochs after the warm-up.
3. Suspects: that share of the samples, highest mean loss since the first epoch, re-decided every epoch, so a
   sample excluded by mistake comes back.
Noisy samples train with robust.noisy_weight; the noise score is the ranking statistic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rdfer.experiments.baselines.confident import confident_off_diagonal
from rdfer.robust.categories import EASY, NOISY
from rdfer.robust.selector import EpochNotes, StatsSelector
from rdfer.robust.stats import LOSS, PROBS

WARMUP_CORR = 0.7  # rank correlation of consecutive epochs' per-sample losses that ends the warm-up
RAMP = 3  # epochs from the warm-up's end to the full exclusion share
MAX_SHARE = 0.5  # most of the data ever excluded


class ExclusionSelector(StatsSelector):
    def __init__(self, robust, num_samples, epochs, device="cpu"):
        super().__init__(robust, num_samples, epochs, device)
        self.start: int | None = None  # the number of epochs done when the warm-up ended

    def decide(self, epoch: int) -> EpochNotes:
        done = epoch + 1
        whole = self.stats.mean()
        seen = ~whole[:, LOSS].isnan()
        notes = EpochNotes()
        if self.start is None:
            self._warm_up_test(done, notes)
        self.score = whole[:, LOSS].nan_to_num(0.0)
        self.category = torch.where(seen, EASY, -1)
        self.weight = torch.ones_like(self.weight)
        if self.start is None:
            return notes
        probs, labels = whole[seen, PROBS:], self.stats.labels[seen]
        estimate = float(confident_off_diagonal(probs, labels).float().mean())
        ramp = min(1.0, (done - self.start + 1) / RAMP)
        k = round(min(estimate, MAX_SHARE) * ramp * int(seen.sum()))
        noisy = torch.zeros_like(seen)
        if k:
            noisy[torch.where(seen, self.score, -float("inf")).topk(k).indices] = True
        self.category = torch.where(noisy, NOISY, self.category)
        self.weight = torch.where(noisy, self.robust.noisy_weight, 1.0)
        notes.fields.update(noise_estimate=estimate, excluded=float(noisy.float().mean()))
        return notes

    def _warm_up_test(self, done: int, notes: EpochNotes) -> None:
        """Ends the warm-up once the per-sample losses of the last two epochs rank the samples alike."""
        if done < 2:
            return
        last, before = self.stats.mean(done - 1, done)[:, LOSS], self.stats.mean(done - 2, done - 1)[:, LOSS]
        both = ~(last.isnan() | before.isnan())
        rho = rank_correlation(last[both], before[both])
        notes.fields["loss_rank_correlation"] = rho
        if rho >= WARMUP_CORR:
            self.start, self.started = done, True
            notes.messages.append(
                f"robust: the warm-up ends after epoch {done} (per-sample losses rank the samples "
                f"alike in consecutive epochs: Spearman {rho:.2f})"
            )

    def state_dict(self) -> dict:
        return {**super().state_dict(), "start": torch.tensor(-1 if self.start is None else self.start)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.start = None if int(state["start"]) < 0 else int(state["start"])


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of a and b [n] (ties broken by position)."""
    if a.numel() < 2:
        return 0.0
    ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).double()
    return float(torch.corrcoef(ranks)[0, 1].nan_to_num(0.0))

"""The `rdfer` method (docs/method.md §3): a ramped, re-decided exclusion of the samples with suspect labels.

Each epoch, from SampleStats:
1. Warm-up, ended by a measured signal: the per-sample losses of the last two epochs rank the samples alike
   (Spearman >= robust.warmup_corr), so the ranking is the network's and not the noise of one epoch's
   augmentation and sampling. Never before the second epoch.
2. The share to exclude: Confident Learning's off-diagonal share on the mean probabilities of the window,
   at most robust.max_share, ramped in over robust.ramp epochs after the warm-up.
3. Suspects: that share of the samples, highest mean loss over the window (robust.window trailing epochs,
   0 = since the first), re-decided every epoch, so a sample excluded by mistake comes back.
4. With robust.keep_hard, a suspect counts as noisy only when the detail clips favour another class over the
   label (window mean) and the label's logit margin is negative; the other suspects are hard (weight 1).
Noisy samples train with robust.noisy_weight; the noise score is the ranking statistic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rdfer.ops.agreement import EASY, HARD, NOISY
from rdfer.robust.confident import confident_off_diagonal
from rdfer.robust.selector import EpochNotes
from rdfer.robust.stats import LOSS, MARGIN, PROBS, VIEW_OTHER, StatsSelector


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
        window = whole if not self.robust.window else self.stats.mean(max(0, done - self.robust.window))
        seen_w = ~window[:, LOSS].isnan()
        self.score = window[:, LOSS].nan_to_num(0.0)
        self.category = torch.where(seen, EASY, -1)
        self.weight = torch.ones_like(self.weight)
        if self.start is None:
            return notes
        probs, labels = window[seen_w, PROBS:], self.stats.labels[seen_w]
        estimate = float(confident_off_diagonal(probs, labels).float().mean())
        ramp = min(1.0, (done - self.start + 1) / max(self.robust.ramp, 1))
        share = min(estimate, self.robust.max_share) * ramp
        k = round(share * int(seen_w.sum()))
        suspects = torch.zeros_like(seen)
        if k:
            suspects[torch.where(seen_w, self.score, -float("inf")).topk(k).indices] = True
        noisy = suspects
        if self.robust.keep_hard:
            noisy = suspects & (window[:, VIEW_OTHER] > 0) & (window[:, MARGIN] < 0)
        self.category = torch.where(noisy, NOISY, torch.where(suspects, HARD, self.category))
        self.weight = torch.where(noisy, self.robust.noisy_weight, 1.0)
        notes.fields.update(
            noise_estimate=estimate,
            excluded=float(noisy.float().mean()),
            suspects=float(suspects.float().mean()),
        )
        return notes

    def _warm_up_test(self, done: int, notes: EpochNotes) -> None:
        """Ends the warm-up once the per-sample losses of the last two epochs rank the samples alike."""
        if done < 2:
            return
        last, before = self.stats.mean(done - 1, done)[:, LOSS], self.stats.mean(done - 2, done - 1)[:, LOSS]
        both = ~(last.isnan() | before.isnan())
        rho = rank_correlation(last[both], before[both])
        notes.fields["loss_rank_correlation"] = rho
        if rho >= self.robust.warmup_corr:
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

"""What the training loop asks of a robust-training method (a "selector"), and the base the methods share.

A selector keeps per-training-sample statistics and turns them into loss weights and targets. The loop calls,
in this order:

    assessed = selector.assess(out, labels, ids)   every step: the batch's weights, targets, categories and
                                                   the rows it would store; nothing is written (pure)
    selector.commit(ids, rows, ok)                 after the update, with ok a device bool: the rows are
                                                   stored only where ok (a non-finite step leaves no trace);
                                                   under torchrun, with every rank's ids and rows
    notes = selector.end_epoch(epoch)              at the end of each epoch: the decisions for the next one
                                                   (warm-up end, categories); log fields and messages

`StatsSelector` is what the methods share: rows in assess, sums in commit, the decisions of end_epoch (each
method's `decide`) looked up in the next epoch's steps, the noise score and category of every epoch kept for
the report. The training core's method and the factory that builds it are in rdfer.robust.selection.

No method here synchronises the device with the host inside a step. See docs/method.md §3 for the methods.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from rdfer.config import RobustConfig
from rdfer.robust.categories import CATEGORY_NAMES, EASY, NOISY
from rdfer.robust.stats import PROBS, SampleStats, sample_rows


@dataclass
class Assessed:
    weight: Tensor  # [B] float32 loss weight of each sample
    target: Tensor  # [B] int64 the class each sample is trained towards (its label, or a relabelling)
    category: Tensor  # [B] int64 easy / hard / noisy (rdfer.ops.agreement codes), for the epoch's shares
    rows: Tensor  # [B, F] float32 what commit() stores for these samples
    elr_target: Tensor | None = None  # [B, C] soft targets of the ELR term, detached
    elr_lambda: float = 0.0  # the ELR term's coefficient
    stream_weight: Tensor | None = None  # [B] the synopsis stream's heads' weights, where they differ


@dataclass
class EpochNotes:
    fields: dict[str, float | bool] = field(default_factory=dict)  # added to the epoch's log row
    messages: list[str] = field(default_factory=list)  # printed once, on rank 0


class Selector:
    """The interface (see the module doc). `category` [N] int64 holds each sample's last category (-1: never
    seen), `majority` [N] the class the network's views favour (-1: unknown); `warm` says whether weights
    apply."""

    category: Tensor
    majority: Tensor
    stats: SampleStats  # the per-sample statistics every method keeps (rdfer.robust.stats)
    warm: bool = False

    def __len__(self) -> int:
        return self.category.shape[0]

    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        raise NotImplementedError

    def commit(self, ids: Tensor, rows: Tensor, ok: Tensor) -> None:
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> EpochNotes:
        raise NotImplementedError

    def scores(self) -> Tensor:
        """[N] float32 noise score of each sample (higher: more likely a wrong label)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def write_noisy(self, path: Path, keys: list[str], labels: list[int], classes: tuple[str, ...]) -> int:
        """noisy_samples.csv: the samples whose category is noisy, with the class the network sees and their
        noise score. Returns how many."""
        flagged = (self.category == NOISY).nonzero().flatten().tolist()
        scores, majority = self.scores().tolist(), self.majority.tolist()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sample_id", "key", "given_label", "network_class", "noise_score"])
            for i in flagged:
                seen = classes[majority[i]] if majority[i] >= 0 else ""
                w.writerow([i, keys[i], classes[labels[i]], seen, f"{scores[i]:.4f}"])
        tmp.replace(path)
        return len(flagged)

    def shares(self) -> dict[str, float]:
        """Share of each category among the samples seen so far."""
        seen = self.category >= 0
        n = max(int(seen.sum()), 1)
        return {name: float((self.category == i).sum()) / n for i, name in enumerate(CATEGORY_NAMES)}


def renormalised(weight: Tensor, cap: float) -> Tensor:
    """Weights scaled so that the batch's loss keeps its size (sum w = B), by a factor of at most `cap`: a
    batch whose samples are mostly excluded is not blown up."""
    return weight * (weight.shape[0] / weight.sum()).clamp(max=cap).nan_to_num(0.0)


class StatsSelector(Selector):
    """A method that decides, once per epoch, each sample's weight and category from SampleStats.

    Subclasses implement `decide(epoch) -> EpochNotes`, which sets `weight`, `category`, `score` and
    `started` (whether decisions are made yet); with robust.enabled=false they still decide (the experiment
    judges them) but every weight stays 1."""

    def __init__(
        self, robust: RobustConfig, num_samples: int, epochs: int, device: torch.device | str = "cpu"
    ):
        self.robust, self.enabled, self.epochs = robust, robust.enabled, epochs
        self.stats = SampleStats(num_samples, device)
        self.weight = torch.ones(num_samples, device=device)  # this epoch's weight of each sample
        self.category = torch.full((num_samples,), -1, dtype=torch.long, device=device)
        self.majority = torch.full((num_samples,), -1, dtype=torch.long, device=device)
        self.score = torch.zeros(num_samples, device=device)
        self.started = False
        self.history: dict[str, list[Tensor]] = {"score": [], "category": []}

    @property
    def warm(self) -> bool:
        return self.enabled and self.started

    @torch.no_grad()
    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        weight = self.weight[ids] if self.warm else torch.ones_like(self.weight[ids])
        category = self.category[ids].clamp(min=EASY)  # undecided samples count as easy
        rows = torch.cat([sample_rows(out, labels), labels[:, None].float()], 1)
        return Assessed(renormalised(weight, self.robust.weight_cap), labels, category, rows)

    @torch.no_grad()
    def commit(self, ids: Tensor, rows: Tensor, ok: Tensor) -> None:
        self.stats.add(ids, rows[:, :-1], rows[:, -1].long(), ok)

    def end_epoch(self, epoch: int) -> EpochNotes:
        self.stats.close_epoch()
        notes = EpochNotes()
        if self.stats.epochs:  # some row stored so far
            seen = self.stats.labels >= 0
            self.category = torch.where(seen & (self.category < 0), EASY, self.category)
            notes = self.decide(epoch)
            self.majority = self.stats.mean()[:, PROBS:].nan_to_num(-1.0).argmax(1)
            self.majority = torch.where(seen, self.majority, -1)
        self.history["score"].append(self.score.clone())
        self.history["category"].append(self.category.clone())
        notes.fields = {"warm": self.warm, **notes.fields}
        return notes

    def decide(self, epoch: int) -> EpochNotes:
        raise NotImplementedError

    def scores(self) -> Tensor:
        return self.score

    def state_dict(self) -> dict:
        stack = lambda xs, dtype: torch.stack(xs).cpu() if xs else torch.zeros(0, len(self), dtype=dtype)  # noqa: E731
        return {
            "stats": self.stats.state_dict(),
            "weight": self.weight.cpu(),
            "category": self.category.cpu(),
            "majority": self.majority.cpu(),
            "score": self.score.cpu(),
            "started": torch.tensor(self.started),
            "score_history": stack(self.history["score"], torch.float32),
            "category_history": stack(self.history["category"], torch.long),
        }

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state["stats"])
        device = self.weight.device
        for name in ("weight", "category", "majority", "score"):
            setattr(self, name, state[name].to(device))
        self.started = bool(state["started"])
        self.history = {
            "score": [s.to(device) for s in state["score_history"]],
            "category": [c.to(device) for c in state["category_history"]],
        }

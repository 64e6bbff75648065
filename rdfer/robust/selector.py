"""What the training loop asks of a robust-training method (a "selector"), and which one a config picks.

A selector keeps per-training-sample statistics and turns them into loss weights and targets. The loop calls,
in this order:

    assessed = selector.assess(out, labels, ids)   every step: the batch's weights, targets, categories and
                                                   the rows it would store; nothing is written (pure)
    selector.commit(ids, rows, ok)                 after the update, with ok a device bool: the rows are
                                                   stored only where ok (a non-finite step leaves no trace);
                                                   under torchrun, with every rank's ids and rows
    notes = selector.end_epoch(epoch)              at the end of each epoch: the decisions for the next one
                                                   (warm-up end, categories); log fields and messages

No method here synchronises the device with the host inside a step. See docs/method.md §3 for the methods.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rdfer.config import RobustConfig
from rdfer.errors import ConfigError
from rdfer.ops.agreement import CATEGORY_NAMES, NOISY

if TYPE_CHECKING:
    from rdfer.robust.stats import SampleStats


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


def make_selector(robust: RobustConfig, num_samples: int, epochs: int, device: torch.device) -> Selector:
    """The selector of the training core (robust.method=rdfer, docs/method.md §3), for a training split of
    num_samples clips. The noise experiment passes its own factory for the methods it measures against."""
    from rdfer.robust.selection import SelectionSelector

    if robust.method != "rdfer":  # config validation refuses any other; a guard for a Config built by hand
        raise ConfigError(f"robust.method={robust.method!r}: the training core has the `rdfer` method only")
    return SelectionSelector(robust, num_samples, epochs, device)

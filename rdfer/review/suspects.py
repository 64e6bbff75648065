"""A training run's suspects read back from its last.pt: the samples its selector flags noisy (the rows of
noisy_samples.csv), highest noise score first, with how the network's prediction moved across epochs.

Only the Selector interface is used (category, majority, scores(), stats: rdfer.robust.selector) and the
layout of SampleStats (per-epoch sums [N, 4 + C] whose columns from PROBS on are the class probabilities):
the selector of the run's config is built and loaded from the checkpoint, whatever method it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rdfer import checkpoint
from rdfer.config import Config, from_dict
from rdfer.errors import CheckpointError
from rdfer.robust.categories import NOISY
from rdfer.robust.selection import restored_selector
from rdfer.robust.selector import Selector
from rdfer.robust.stats import PROBS

# The trajectory's verdict over the last third of the epochs that saw the sample.
RIGHT, OTHER, CHANGING = "right", "another class", "changing"


@dataclass(frozen=True)
class Suspect:
    sample_id: int  # position in the training split
    given: int  # the label the dataset gives
    seen: int  # the class the network's views favour (Selector.majority; -1: unknown)
    score: float  # Selector.scores()
    epochs: tuple[int, ...]  # the predicted class of each epoch (-1: the sample was not seen that epoch)

    @property
    def trend(self) -> str:
        """right: the late epochs (the last third that saw the sample) all predict the given label; another
        class: all the same other one; changing: they disagree."""
        seen = [c for c in self.epochs if c >= 0]
        late = set(seen[len(seen) - math.ceil(len(seen) / 3) :])
        if late == {self.given}:
            return RIGHT
        return OTHER if len(late) == 1 else CHANGING


@dataclass
class Run:
    folder: Path
    config: Config
    classes: tuple[str, ...]
    epochs: int  # closed epochs in the statistics
    num_samples: int  # the training split's size the selector was built for
    suspects: list[Suspect]  # highest score first
    checkpoint: Path


def load_selector(state: dict, config: Config, path: Path) -> Selector:
    """The run's selector with its saved state (built on the CPU for the run's training split size)."""
    saved = state.get("selector")
    if not isinstance(saved, dict) or "stats" not in saved:
        raise CheckpointError(f"{path}: holds no selector state (review needs last.pt, not best.pt)")
    return restored_selector(config, saved)


def per_epoch_classes(selector: Selector) -> torch.Tensor:
    """[E, N] int64: each epoch's predicted class (argmax of the mean probabilities), -1 where unseen."""
    stats = selector.stats
    if not stats.epochs:
        return torch.zeros(0, len(selector), dtype=torch.long)
    sums, counts = torch.stack(stats.sums).cpu(), torch.stack(stats.counts).cpu()
    predicted = sums[:, :, PROBS:].argmax(-1)
    return torch.where(counts > 0, predicted, -1)


def suspects_of(selector: Selector, top: int | None = None) -> list[Suspect]:
    """The noisy-category samples, highest score first (ties: lower sample id), at most `top`."""
    flagged = (selector.category.cpu() == NOISY).nonzero().flatten()
    scores = selector.scores().float().cpu()
    order = sorted(flagged.tolist(), key=lambda i: (-float(scores[i]), i))[:top]
    labels, majority = selector.stats.labels.cpu(), selector.majority.cpu()
    history = per_epoch_classes(selector)
    return [
        Suspect(i, int(labels[i]), int(majority[i]), float(scores[i]), tuple(history[:, i].tolist()))
        for i in order
    ]


def load_run(folder: Path, top: int | None = None) -> Run:
    path = Path(folder) / "last.pt"
    if not Path(folder).is_dir():
        raise CheckpointError(f"{folder}: no such run folder")
    state = checkpoint.load(path)
    config = from_dict(state["config"])
    selector = load_selector(state, config, path)
    suspects = suspects_of(selector, top)
    return Run(
        Path(folder), config, tuple(state["classes"]), selector.stats.epochs, len(selector), suspects, path
    )

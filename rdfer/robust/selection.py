"""The `rdfer` method (robust.method=rdfer, docs/method.md §3): early-learning regularisation on every
sample, and a small-loss split that lists the suspect labels.

Throughout, the ELR term (rdfer.robust.elr) pulls every prediction towards the network's own early
predictions, so the wrong labels are not memorised. After a warm-up of robust.warmup of the epochs, each
epoch a 2-component Gaussian mixture of the per-sample loss, averaged over every epoch so far, splits the
samples into clean and suspect (DivideMix's small-loss split): the suspects are the samples listed as noisy,
with the mean loss as their noise score. With robust.exclude they also train with robust.noisy_weight (0:
left out) in the next epoch, re-decided every epoch; measured, leaving them out lost to keeping them
(README, Noise robustness), so by default every weight stays 1.

`make_selector` is the factory the training loop calls with the robust section (the method a config picks);
`restored_selector` reads a finished run's selector back from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rdfer.config import Config, RobustConfig
from rdfer.errors import ConfigError
from rdfer.robust.categories import EASY, NOISY
from rdfer.robust.elr import ElrTargets
from rdfer.robust.gmm import gmm2
from rdfer.robust.selector import Assessed, EpochNotes, Selector, StatsSelector
from rdfer.robust.stats import LOSS


class SelectionSelector(StatsSelector):
    def __init__(self, robust, num_samples, epochs, device="cpu"):
        super().__init__(robust, num_samples, epochs, device)
        self.term = robust.elr_lambda if robust.enabled else 0.0
        self.elr = ElrTargets(num_samples, robust.elr_beta, device)

    @torch.no_grad()
    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        base = super().assess(out, labels, ids)
        target = self.elr.step(out["logits"], ids)
        base.rows = torch.cat([target, base.rows], 1)  # commit stores the targets where the step was good
        if self.term > 0:
            base.elr_target, base.elr_lambda = target, self.term
        return base

    @torch.no_grad()
    def commit(self, ids: Tensor, rows: Tensor, ok: Tensor) -> None:
        c = self.elr.num_classes
        if c is None:
            raise RuntimeError("commit before assess: the number of classes is not known")
        self.elr.store(ids, rows[:, :c], ok)
        super().commit(ids, rows[:, c:], ok)

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
        if self.robust.exclude:
            self.weight = torch.where(noisy, self.robust.noisy_weight, 1.0)
        return EpochNotes({"suspects": float(noisy.float().mean())})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "elr_targets": self.elr.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.elr.load_state_dict(state["elr_targets"])
        super().load_state_dict(state)


def make_selector(robust: RobustConfig, num_samples: int, epochs: int, device: torch.device) -> Selector:
    """The selector of the training core (robust.method=rdfer, docs/method.md §3), for a training split of
    num_samples clips. The noise experiment passes its own factory for the methods it measures against."""
    if robust.method != "rdfer":  # config validation refuses any other; a guard for a Config built by hand
        raise ConfigError(f"robust.method={robust.method!r}: the training core has the `rdfer` method only")
    return SelectionSelector(robust, num_samples, epochs, device)


def restored_selector(config: Config, saved: dict, make: Callable[..., Selector] = make_selector) -> Selector:
    """A finished run's selector on the CPU, read back from its checkpoint's `selector` state: built by `make`
    (the run's factory) for the run's config and training split size, then loaded."""
    size = int(saved["stats"]["labels"].shape[0])
    selector = make(config.robust, size, config.optim.epochs, torch.device("cpu"))
    selector.load_state_dict(saved)
    return selector

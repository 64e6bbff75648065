"""The paper's agreement rule as a selector (docs/method.md §3): per training sample, EMAs of the detail clips'
agreement A and label support S; after a warm-up of a fixed share of the epochs, easy / hard / noisy from
them, and the weights easy 1, hard 1 + (1 - A), noisy robust.noisy_weight (or relabelling).

Rows (what commit stores): [EMA A, EMA S, majority class, category]."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from rdfer.config import RobustConfig
from rdfer.ops.agreement import AgreementParams, agreement
from rdfer.robust.selector import Assessed, EpochNotes, Selector


def agreement_params(robust: RobustConfig) -> AgreementParams:
    """The robust section's thresholds, as the agreement op takes them (the same names)."""
    return AgreementParams(**{f.name: getattr(robust, f.name) for f in dataclasses.fields(AgreementParams)})


class AgreementSelector(Selector):
    def __init__(self, robust: RobustConfig, num_samples: int, epochs: int, device: torch.device | str = "cpu"):
        self.params = agreement_params(robust)
        self.enabled = robust.enabled
        self.warmup_epochs = round(robust.warmup * epochs)
        self.warm = robust.enabled and self.warmup_epochs == 0
        self.ema = torch.full((num_samples, 2), float("nan"), device=device)  # [A, S]; NaN = not yet seen
        self.majority = torch.full((num_samples,), -1, dtype=torch.long, device=device)
        self.category = torch.full((num_samples,), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        stats = agreement(out["detail_instance_logits"].detach(), labels, ids, self.ema, self.params, self.warm,
                          update_memory=False)  # fmt: skip
        rows = torch.stack([stats.ema_agreement, stats.ema_support, stats.majority.float(),
                            stats.category.float()], dim=1)  # fmt: skip
        return Assessed(stats.weight, stats.target, stats.category, rows)

    @torch.no_grad()
    def commit(self, ids: Tensor, rows: Tensor, ok: Tensor) -> None:
        old = torch.cat([self.ema[ids], self.majority[ids, None].float(), self.category[ids, None].float()], 1)
        rows = torch.where(ok, rows, old)
        self.ema[ids] = rows[:, :2]
        self.majority[ids] = rows[:, 2].long()
        self.category[ids] = rows[:, 3].long()

    def end_epoch(self, epoch: int) -> EpochNotes:
        notes = EpochNotes({"warm": self.warm})
        if self.enabled and epoch + 1 == self.warmup_epochs:
            self.warm = True
            noisy = self.shares()["noisy"]
            if noisy > 0.5:
                notes.messages.append(
                    f"warning: the warm-up ends with {100 * noisy:.0f}% of the samples looking noisy: a model "
                    "that predicts one class for every clip agrees with itself. Agreement weights from such a "
                    "model will down-weight most of the data; consider a longer robust.warmup."
                )
        return notes

    def scores(self) -> Tensor:
        """A * (1 - S): the clips agree, and the label gets little support (0 where never seen)."""
        return (self.ema[:, 0] * (1 - self.ema[:, 1])).nan_to_num(0.0)

    def state_dict(self) -> dict[str, Tensor]:
        return {"ema": self.ema.cpu(), "majority": self.majority.cpu(), "category": self.category.cpu(),
                "warm": torch.tensor(self.warm)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["ema"].shape != self.ema.shape:
            raise ValueError(f"the agreement memory holds {state['ema'].shape[0]} samples, this split {len(self)}")
        for k in ("ema", "majority", "category"):
            getattr(self, k).copy_(state[k])
        self.warm = bool(state["warm"])

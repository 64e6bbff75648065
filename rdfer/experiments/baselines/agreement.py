"""The `agreement` baseline: the paper's agreement rule as a selector (docs/method.md §3). Per training
sample, EMAs of the detail clips' agreement A and label support S; after robust.warmup of the epochs, easy /
hard / noisy from them (the thresholds of rdfer.ops.agreement.AgreementParams), and the weights easy 1, hard
1 + (1 - A), noisy robust.noisy_weight. The fused Triton agreement kernel computes the rule for a batch. It
keeps the shared SampleStats too, so its runs are judged like the others.

Rows (what commit stores): [EMA A, EMA S, majority class, category], then SampleStats' row and the label."""

from __future__ import annotations

import torch
from torch import Tensor

from rdfer.config import RobustConfig
from rdfer.ops.agreement import AgreementParams, agreement
from rdfer.robust.selector import Assessed, EpochNotes, StatsSelector
from rdfer.robust.stats import sample_rows


def agreement_params(robust: RobustConfig) -> AgreementParams:
    """The rule's published thresholds, with the robust section's weight for a noisy sample."""
    return AgreementParams(noisy_weight=robust.noisy_weight)


class AgreementSelector(StatsSelector):
    def __init__(
        self,
        robust: RobustConfig,
        num_samples: int,
        epochs: int,
        device: torch.device | str = "cpu",
        *,
        params: AgreementParams | None = None,
    ):
        super().__init__(robust, num_samples, epochs, device)
        self.params = agreement_params(robust) if params is None else params
        self.warmup_epochs = round(robust.warmup * epochs)
        self.started = self.warmup_epochs == 0
        self.ema = torch.full((num_samples, 2), float("nan"), device=device)  # [A, S]; NaN = not yet seen

    @torch.no_grad()
    def assess(self, out: dict[str, Tensor], labels: Tensor, ids: Tensor) -> Assessed:
        stats = agreement(
            out["detail_instance_logits"].detach(), labels, ids, self.ema, self.params, self.warm
        )
        rows = torch.stack(
            [stats.ema_agreement, stats.ema_support, stats.majority.float(), stats.category.float()], dim=1
        )
        rows = torch.cat([rows, sample_rows(out, labels), labels[:, None].float()], 1)
        return Assessed(stats.weight, stats.target, stats.category, rows)

    @torch.no_grad()
    def commit(self, ids: Tensor, rows: Tensor, ok: Tensor) -> None:
        old = torch.cat(
            [self.ema[ids], self.majority[ids, None].float(), self.category[ids, None].float()], 1
        )
        mine = torch.where(ok, rows[:, :4], old)
        self.ema[ids] = mine[:, :2]
        self.majority[ids] = mine[:, 2].long()
        self.category[ids] = mine[:, 3].long()
        super().commit(ids, rows[:, 4:], ok)

    def end_epoch(self, epoch: int) -> EpochNotes:
        majority = self.majority.clone()  # the clips' majority, not the base's mean prediction
        notes = super().end_epoch(epoch)
        self.majority = majority
        if self.enabled and epoch + 1 == self.warmup_epochs:
            self.started = True
            noisy = self.shares()["noisy"]
            if noisy > 0.5:
                notes.messages.append(
                    f"warning: the warm-up ends with {100 * noisy:.0f}% of the samples looking noisy: a "
                    "model that predicts one class for every clip agrees with itself. Agreement weights "
                    "from such a model will down-weight most of the data; consider a longer robust.warmup."
                )
        notes.fields["warm"] = self.warm
        return notes

    def decide(self, epoch: int) -> EpochNotes:
        self.score = self.scores()
        return EpochNotes()

    def scores(self) -> Tensor:
        """A * (1 - S): the clips agree, and the label gets little support (0 where never seen)."""
        return (self.ema[:, 0] * (1 - self.ema[:, 1])).nan_to_num(0.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ema": self.ema.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["ema"].shape != self.ema.shape:
            raise ValueError(
                f"the agreement memory holds {state['ema'].shape[0]} samples, this split {len(self)}"
            )
        super().load_state_dict(state)
        self.ema.copy_(state["ema"])

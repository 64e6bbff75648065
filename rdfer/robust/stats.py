"""The per-sample statistics the robust methods read (docs/method.md §3).

Every training forward gives one row per sample (`sample_rows`, from the logits it already computed): the
cross-entropy of the video logits on the given label, the logit margin of the label (its logit minus the
largest other one), whether the prediction is wrong, the detail clips' mean probability of the strongest other
class minus the label's, then the C class probabilities. `SampleStats` sums the rows of each epoch apart, so
a method reads the mean over any run of epochs (since the first one, or a trailing window), not an EMA that
memorisation overwrites.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ROW_FIELDS = ("loss", "margin", "wrong", "view_other")  # then the C class probabilities
LOSS, MARGIN, WRONG, VIEW_OTHER, PROBS = 0, 1, 2, 3, 4


@torch.no_grad()
def sample_rows(out: dict[str, Tensor], labels: Tensor) -> Tensor:
    """[B, 4 + C] float32: ROW_FIELDS, then softmax of the video logits. Plain PyTorch, no host sync."""
    logits = out["logits"].detach().float()
    label = labels[:, None]
    loss = F.cross_entropy(logits, labels, reduction="none")
    margin = logits.gather(1, label).squeeze(1) - logits.scatter(1, label, float("-inf")).max(1).values
    wrong = (logits.argmax(1) != labels).float()
    views = out["detail_instance_logits"].detach().float().softmax(-1).mean(1)  # [B, C]
    view_other = views.scatter(1, label, -1.0).max(1).values - views.gather(1, label).squeeze(1)
    return torch.cat([torch.stack([loss, margin, wrong, view_other], 1), logits.softmax(1)], 1)


class SampleStats:
    """Per epoch, per sample: the sum of its rows and how many were stored; plus each sample's given label.
    Closed epochs are kept (one [N, F] slot each) so that any window can be read back."""

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.num_samples, self.device = num_samples, torch.device(device)
        self.sums: list[Tensor] = []  # closed epochs, [N, F] each
        self.counts: list[Tensor] = []  # [N] each
        self.current: tuple[Tensor, Tensor] | None = None
        self.labels = torch.full((num_samples,), -1, dtype=torch.long, device=self.device)

    def add(self, ids: Tensor, rows: Tensor, labels: Tensor, ok: Tensor) -> None:
        """Add rows [B, F] of samples ids [B] to this epoch, only where the device bool ok is set."""
        if self.current is None:
            self.current = (
                torch.zeros(self.num_samples, rows.shape[1], device=self.device),
                torch.zeros(self.num_samples, device=self.device),
            )
        sums, counts = self.current
        sums.index_add_(0, ids, torch.where(ok, rows, 0.0))
        counts.index_add_(0, ids, ok.float().expand(ids.shape[0]))
        self.labels[ids] = torch.where(ok, labels, self.labels[ids])

    def close_epoch(self) -> None:
        """End this epoch's slot. An epoch without a stored row (every step empty) gets an empty slot once the
        row width is known; before any row there is nothing to keep."""
        if self.current is None:
            if not self.sums:
                return
            self.current = (torch.zeros_like(self.sums[-1]), torch.zeros_like(self.counts[-1]))
        self.sums.append(self.current[0])
        self.counts.append(self.current[1])
        self.current = None

    @property
    def epochs(self) -> int:
        return len(self.sums)

    def mean(self, first: int = 0, last: int | None = None) -> Tensor:
        """[N, F] mean row over closed epochs [first, last) (NaN for a sample never stored there)."""
        last = self.epochs if last is None else last
        if first >= last:
            raise ValueError(f"no closed epoch in [{first}, {last})")
        total = torch.stack(self.sums[first:last]).sum(0)
        n = torch.stack(self.counts[first:last]).sum(0)
        return total / n[:, None]  # 0 / 0 = NaN where never seen

    def state_dict(self) -> dict[str, Tensor]:
        if self.current is not None:
            raise RuntimeError("the statistics are saved at the end of an epoch, not inside one")
        width = self.sums[0].shape[1] if self.sums else 0
        return {
            "sums": torch.stack(self.sums).cpu() if self.sums else torch.zeros(0, self.num_samples, width),
            "counts": torch.stack(self.counts).cpu() if self.counts else torch.zeros(0, self.num_samples),
            "labels": self.labels.cpu(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["labels"].shape[0] != self.num_samples:
            raise ValueError(
                f"the statistics hold {state['labels'].shape[0]} samples, this split {self.num_samples}"
            )
        self.sums = [s.to(self.device) for s in state["sums"]]
        self.counts = [c.to(self.device) for c in state["counts"]]
        self.labels = state["labels"].to(self.device)
        self.current = None

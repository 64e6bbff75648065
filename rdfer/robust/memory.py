"""The per-sample agreement memory: EMAs of A and S (computed by rdfer.ops.agreement), and the last majority
class and category of each training sample, for the epoch log and noisy_samples.csv."""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor

from rdfer.ops.agreement import CATEGORY_NAMES, NOISY, AgreementParams, AgreementStats, agreement


class AgreementMemory:
    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.ema = torch.full((num_samples, 2), float("nan"), device=device)  # [A, S]; NaN = not yet seen
        self.majority = torch.full((num_samples,), -1, dtype=torch.long, device=device)
        self.category = torch.full((num_samples,), -1, dtype=torch.long, device=device)

    def __len__(self) -> int:
        return self.ema.shape[0]

    @torch.no_grad()
    def observe(self, clip_logits: Tensor, labels: Tensor, sample_ids: Tensor, params: AgreementParams,
                warm: bool) -> AgreementStats:
        if int(sample_ids.max()) >= len(self) or int(sample_ids.min()) < 0:
            raise IndexError(f"sample ids must be in [0, {len(self)}): the memory is sized to the train split")
        stats = agreement(clip_logits.detach(), labels, sample_ids, self.ema, params, warm)
        self.ema[sample_ids] = stats.ema_rows
        self.majority[sample_ids] = stats.majority
        self.category[sample_ids] = stats.category
        return stats

    def rows(self, ids: Tensor) -> Tensor:
        """[n, 4] float rows (EMA A, EMA S, majority, category) of these samples, for merging across ranks."""
        return torch.cat([self.ema[ids], self.majority[ids, None].float(), self.category[ids, None].float()], 1)

    def merge(self, ids: Tensor, rows: Tensor) -> None:
        self.ema[ids] = rows[:, :2]
        self.majority[ids] = rows[:, 2].long()
        self.category[ids] = rows[:, 3].long()

    def shares(self) -> dict[str, float]:
        """Share of each category among the samples seen so far."""
        seen = self.category >= 0
        n = max(int(seen.sum()), 1)
        return {name: float((self.category == i).sum()) / n for i, name in enumerate(CATEGORY_NAMES)}

    def state_dict(self) -> dict[str, Tensor]:
        return {"ema": self.ema.cpu(), "majority": self.majority.cpu(), "category": self.category.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["ema"].shape != self.ema.shape:
            raise ValueError(f"agreement memory holds {state['ema'].shape[0]} samples, this split {len(self)}")
        for k, v in state.items():
            getattr(self, k).copy_(v)

    def write_noisy(self, path: Path, keys: list[str], labels: list[int], classes: tuple[str, ...]) -> int:
        """noisy_samples.csv: the samples whose last category was noisy. Returns how many."""
        flagged = (self.category == NOISY).nonzero().flatten().tolist()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sample_id", "key", "given_label", "majority_class", "A", "S"])
            for i in flagged:
                a, s = self.ema[i].tolist()
                w.writerow([i, keys[i], classes[labels[i]], classes[int(self.majority[i])], f"{a:.4f}", f"{s:.4f}"])
        tmp.replace(path)
        return len(flagged)

"""Judging a robust method against SynthDFER's truth, from the selector state a run saved (its last.pt).

The truth per training sample: `noisy` (a wrong label, whether or not the clip is hard), `hard` (a hard clip
with its right label; the reason is SynthDFER's: intensity, short_apex or distractor), `easy` (the rest).
What is judged: the method's noise score (`Selector.scores()`) and the plain per-sample loss averaged over the
epochs so far, each as an AUROC for noisy vs clean (easy and hard) and for noisy vs hard; the samples the
method flags noisy (category), against the truth. Per epoch from the selector's history, and at the end.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rdfer.metrics import auroc
from rdfer.robust.categories import CATEGORY_NAMES, NOISY
from rdfer.robust.stats import LOSS, MARGIN, PROBS, VIEW_OTHER

TRUE_CATEGORIES = ("easy", "hard", "noisy")
HARD_REASONS = ("intensity", "short_apex", "distractor")


def true_categories(true: np.ndarray, given: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """0 easy, 1 hard, 2 noisy per sample: a wrong label makes a sample noisy whether or not it is hard."""
    return np.where(true != given, 2, np.where(hard, 1, 0))


def _area(score: Tensor, truth: Tensor, negative: Tensor) -> float | None:
    """AUROC of score for truth == noisy against the samples in `negative`; None when either side is empty."""
    keep = (truth == 2) | negative
    area = auroc(score[keep], (truth == 2)[keep])
    return None if area != area else area


def aurocs(score: Tensor, loss: Tensor, truth: Tensor) -> dict[str, float | None]:
    clean, hard = truth != 2, truth == 1
    return {
        "auroc": _area(score, truth, clean),
        "auroc_noisy_vs_hard": _area(score, truth, hard),
        "loss_auroc": _area(loss, truth, clean),
        "loss_auroc_noisy_vs_hard": _area(loss, truth, hard),
    }


def flags(category: Tensor, truth: Tensor, reasons: np.ndarray) -> dict:
    """What the categories say against the truth: counts, precision, recall, hard clips flagged noisy."""
    flagged, noisy = category == NOISY, truth == 2
    hard = truth == 1
    by_reason = {}
    for r in HARD_REASONS:
        mine = hard & torch.as_tensor(reasons == r)
        by_reason[r] = float((flagged & mine).sum() / mine.sum()) if mine.any() else None
    return {
        "flagged_noisy": int(flagged.sum()),
        "precision": float((flagged & noisy).sum() / flagged.sum()) if flagged.any() else None,
        "recall": float((flagged & noisy).sum() / noisy.sum()) if noisy.any() else None,
        "hard_flagged_noisy": float((flagged & hard).sum() / hard.sum()) if hard.any() else None,
        "hard_flagged_noisy_by_reason": by_reason,
    }


def judge(selector, truth: np.ndarray, reasons: np.ndarray, history: list[dict]) -> dict:
    """The run's report fields from its selector (state loaded) and the trainer's epoch log `history`."""
    t = torch.as_tensor(truth)
    category, score = selector.category.cpu(), selector.scores().cpu().float()
    loss = selector.stats.mean()[:, LOSS].nan_to_num(0.0).cpu()
    confusion = {
        name: {f: int(((t == i) & (category == j)).sum()) for j, f in enumerate(CATEGORY_NAMES)}
        for i, name in enumerate(TRUE_CATEGORIES)
    }
    result = {
        **aurocs(score, loss, t),
        "confusion": confusion,
        "never_seen": int((category < 0).sum()),
        **flags(category, t, reasons),
    }
    result["dynamics"] = dynamics(selector.stats, t)
    result["epochs"] = per_epoch(selector, t, reasons, history)
    result["scores"] = {
        name: [round(float(s), 4) for s in score[t == i]] for i, name in enumerate(TRUE_CATEGORIES)
    }
    return result


def dynamics_statistics(stats) -> dict[str, Tensor]:
    """[N] per-sample statistics of the training dynamics, read from the per-epoch sums (each a candidate
    noise score: higher, more likely a wrong label). One forward's reading (the detail clips) and the epochs'
    readings (the clips each epoch samples anew): loss, AUM's margin, Data Maps' confidence and variability,
    how often the prediction sits on one other class, how often it changes (forgetting)."""
    sums, counts = torch.stack(stats.sums).double(), torch.stack(stats.counts).double()
    seen = counts > 0  # [E, N]
    per = sums / counts.clamp(min=1)[..., None]
    n_seen = seen.sum(0).clamp(min=1)
    mean = lambda x: (x * seen).sum(0) / n_seen  # noqa: E731  over the epochs that saw the sample
    label = stats.labels.clamp(min=0).to(per.device)
    p_label = per[..., PROBS:].gather(2, label.expand(per.shape[0], -1)[..., None]).squeeze(2)  # [E, N]
    pred = per[..., PROBS:].argmax(2)  # [E, N]
    votes = (F.one_hot(pred, per.shape[2] - PROBS) * seen[..., None]).sum(0)  # [N, C] epochs per class
    other = votes.scatter(1, label[:, None], 0).max(1).values  # epochs on the most frequent other class
    changes = (pred[1:] != pred[:-1]) & seen[1:] & seen[:-1]
    return {
        "detail clips favour another class (one forward)": mean(per[..., VIEW_OTHER]),
        "mean loss": mean(per[..., LOSS]),
        "AUM (negated mean margin)": -mean(per[..., MARGIN]),
        "Data Maps confidence (1 - mean p_label)": 1 - mean(p_label),
        "Data Maps variability (sd of p_label)": (mean(p_label**2) - mean(p_label) ** 2).clamp(min=0).sqrt(),
        "epochs on one other class": other / n_seen,
        "forgetting (prediction changes)": changes.sum(0) / (n_seen - 1).clamp(min=1),
    }


def dynamics(stats, truth: Tensor) -> dict[str, dict[str, float | None]]:
    """The AUROC of each training-dynamics statistic, noisy vs clean and noisy vs hard."""
    if not stats.sums:
        return {}
    out = {}
    for name, value in dynamics_statistics(stats).items():
        v = value.float().cpu()
        out[name] = {
            "noisy_vs_clean": _area(v, truth, truth != 2),
            "noisy_vs_hard": _area(v, truth, truth == 1),
        }
    return out


def per_epoch(selector, truth: Tensor, reasons: np.ndarray, history: list[dict]) -> list[dict]:
    """One row per epoch: test WAR/UAR, both AUROCs of the noise score and of the plain loss (mean since the
    first epoch), the flags; read from the selector's per-epoch history."""
    rows = []
    scores, categories = selector.history["score"], selector.history["category"]
    for e, logged in enumerate(history[: len(scores)]):
        loss = selector.stats.mean(0, e + 1)[:, LOSS].nan_to_num(0.0).cpu()
        row = {
            "epoch": e + 1,
            "warm": logged.get("warm"),
            "test_war": logged.get("test_war"),
            "test_uar": logged.get("test_uar"),
        }
        row |= aurocs(scores[e].cpu().float(), loss, truth)
        row |= flags(categories[e].cpu(), truth, reasons)
        rows.append(row)
    return rows

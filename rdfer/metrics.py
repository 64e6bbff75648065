"""WAR (accuracy), UAR (mean per-class recall), the confusion matrix, and AUROC (for the noise experiment)."""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """[C, C] int64 counts; row = true class, column = predicted class."""
    idx = target.long().flatten() * num_classes + pred.long().flatten()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


def summarize(cm: Tensor, classes: tuple[str, ...] | list[str]) -> dict:
    """WAR, UAR and per-class recall from a confusion matrix.

    UAR averages the recall of the classes that occur in the ground truth (as scikit-learn's
    balanced_accuracy_score does); a class with no true samples has recall None."""
    cm = cm.double()
    support = cm.sum(1)
    total = float(support.sum())
    recall = torch.where(
        support > 0, cm.diag() / support.clamp(min=1), torch.full_like(support, float("nan"))
    )
    present = support > 0
    return {
        "war": float(cm.diag().sum() / total) if total else float("nan"),
        "uar": float(recall[present].mean()) if present.any() else float("nan"),
        "num_clips": int(total),
        "per_class_recall": {
            c: (None if not present[i] else float(recall[i])) for i, c in enumerate(classes)
        },
        "confusion": cm.long().tolist(),
    }


def auroc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of `scores` for telling `positive` (bool) samples from the others: the chance
    that a random positive scores above a random negative, ties counting one half (Mann-Whitney U)."""
    scores, positive = scores.double().flatten(), positive.bool().flatten()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Ranks 1..n with tied scores sharing their mean rank.
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    upper = counts.cumsum(0).double()
    mean_rank = upper - (counts.double() - 1) / 2
    ranks = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

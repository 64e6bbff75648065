"""WAR (accuracy), UAR (mean per-class recall) and the confusion matrix."""
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
    recall = torch.where(support > 0, cm.diag() / support.clamp(min=1), torch.full_like(support, float("nan")))
    present = support > 0
    return {
        "war": float(cm.diag().sum() / total) if total else float("nan"),
        "uar": float(recall[present].mean()) if present.any() else float("nan"),
        "num_clips": int(total),
        "per_class_recall": {c: (None if not present[i] else float(recall[i])) for i, c in enumerate(classes)},
        "confusion": cm.long().tolist(),
    }

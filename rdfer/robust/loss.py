"""The training loss (docs/method.md §4): per-sample weighted, label-smoothed cross-entropy over the detail
and synopsis video logits and the instance logits of both streams, plus the L1 loss of learned key positions;
with robust.enabled, plus the early-learning regularisation term on the video logits (rdfer.robust.elr)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rdfer.config import OptimConfig
from rdfer.robust.elr import elr_term


def weighted_ce(logits: Tensor, target: Tensor, weight: Tensor, smoothing: float) -> Tensor:
    """mean_i w_i * CE(logits_i, target_i); logits [B, C] or [B, L, C] (each instance takes its video's
    target and weight). The mean is over samples, not over weights, so a down-weighted sample counts less."""
    if logits.dim() == 3:
        b, n, c = logits.shape
        per = (
            F.cross_entropy(
                logits.float().reshape(b * n, c),
                target.repeat_interleave(n),
                reduction="none",
                label_smoothing=smoothing,
            )
            .view(b, n)
            .mean(1)
        )
    else:
        per = F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=smoothing)
    return (weight * per).mean()


def rdfer_loss(
    out: dict[str, Tensor],
    target: Tensor,
    weight: Tensor,
    cfg: OptimConfig,
    num_frames: int,
    elr_target: Tensor | None = None,
    elr_lambda: float = 0.0,
    stream_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted sum of the parts; elr_target [B, C] (detached) adds elr_lambda * the ELR term;
    stream_weight [B], where given, weights the synopsis stream's heads instead of weight (co-teaching)."""
    ls = cfg.label_smoothing
    sw = weight if stream_weight is None else stream_weight
    parts = {
        "detail": weighted_ce(out["detail_video_logits"], target, weight, ls),
        "synopsis": weighted_ce(out["synopsis_video_logits"], target, sw, ls),
        "instance": 0.5
        * (
            weighted_ce(out["synopsis_instance_logits"], target, sw, ls)
            + weighted_ce(out["detail_instance_logits"], target, weight, ls)
        ),
    }
    total = (
        parts["detail"] + cfg.synopsis_weight * parts["synopsis"] + cfg.instance_weight * parts["instance"]
    )
    if "predicted_positions" in out:
        scale = 1.0 / max(num_frames - 1, 1)
        parts["position"] = F.l1_loss(out["predicted_positions"] * scale, out["key_positions"] * scale)
        total = total + cfg.position_weight * parts["position"]
    if elr_target is not None:
        parts["elr"] = elr_term(out["logits"], elr_target)
        total = total + elr_lambda * parts["elr"]
    return total, {k: v.detach() for k, v in parts.items()}  # tensors: the loop syncs once per log step

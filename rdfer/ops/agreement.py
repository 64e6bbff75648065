"""Cross-clip prediction agreement (SPEC §3): hard vs noisy samples, per-sample EMA memory, loss weights.

For one batch, from the detail stream's clip logits [B, K, C]:
  p_k = softmax(logits_k); p = mean_k p_k; a_k = argmax p_k (first maximum);
  majority m = the class with the most votes; ties go to the larger p[c], then to the lower class index
  (the package's choice: it equals argmax_c (votes_c + 0.5 * p[c]), first maximum, since 0.5*p < 1);
  A = votes_m / K; S = p[y]; M = max(p) - p[y].
The memory [N, 2] (float32, NaN = not yet seen) holds per-sample EMAs of A and S, updated in place:
  ema = x on first sight, else momentum * ema + (1 - momentum) * x.
Categories use the EMAs (config `robust.use_ema`, default on) and the current majority:
  easy:  A >= a_min and m == y            -> weight 1
  noisy: A >= a_min and m != y and S < s_max -> weight noisy_weight, or with relabel and M > relabel_margin:
                                              target := m with weight 1
  hard:  otherwise                         -> weight 1 + (1 - A)
Before the warm-up ends (`warm=False`) categories are still reported but every weight is 1 and no target
changes. Nothing here carries a gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rdfer.ops import dispatch

EASY, HARD, NOISY = 0, 1, 2
CATEGORY_NAMES = ("easy", "hard", "noisy")


@dataclass(frozen=True)
class AgreementParams:
    a_min: float = 0.75
    s_max: float = 0.2
    noisy_weight: float = 0.1
    momentum: float = 0.9
    relabel: bool = False
    relabel_margin: float = 0.5
    use_ema: bool = True


@dataclass
class AgreementStats:
    majority: Tensor  # [B] int64
    agreement: Tensor  # [B] float32, A of this batch
    support: Tensor  # [B] float32, S of this batch
    margin: Tensor  # [B] float32, M of this batch
    ema_agreement: Tensor  # [B] float32, after this batch's update
    ema_support: Tensor  # [B] float32
    category: Tensor  # [B] int64: EASY, HARD or NOISY
    weight: Tensor  # [B] float32
    target: Tensor  # [B] int64: the label, or m where relabelled


@torch.no_grad()
def agreement_reference(
    clip_logits: Tensor,
    labels: Tensor,
    sample_ids: Tensor,
    memory: Tensor,
    params: AgreementParams,
    warm: bool,
    update_memory: bool = True,
) -> AgreementStats:
    b, k, c = clip_logits.shape
    probs = clip_logits.float().softmax(dim=-1)
    mean = probs.mean(dim=1)  # [B, C]
    votes = torch.zeros(b, c, device=probs.device).scatter_add_(
        1, probs.argmax(dim=-1), torch.ones(b, k, device=probs.device)
    )
    majority = (votes + 0.5 * mean).argmax(dim=-1)
    agreement = votes.gather(1, majority[:, None]).squeeze(1) / k
    support = mean.gather(1, labels[:, None]).squeeze(1)
    margin = mean.max(dim=-1).values - support

    current = torch.stack([agreement, support], dim=1)
    old = memory[sample_ids]
    ema = torch.where(torch.isnan(old), current, params.momentum * old + (1 - params.momentum) * current)
    if update_memory:
        memory[sample_ids] = ema
    a, s = (ema[:, 0], ema[:, 1]) if params.use_ema else (agreement, support)

    agree = a >= params.a_min
    is_easy = agree & (majority == labels)
    is_noisy = agree & (majority != labels) & (s < params.s_max)
    category = torch.full((b,), HARD, dtype=torch.long, device=probs.device)
    category[is_easy] = EASY
    category[is_noisy] = NOISY

    weight = torch.ones(b, device=probs.device)
    target = labels.clone()
    if warm:
        weight = torch.where(category == HARD, 1 + (1 - a), weight)
        weight = torch.where(is_noisy, torch.full_like(weight, params.noisy_weight), weight)
        if params.relabel:
            flip = is_noisy & (margin > params.relabel_margin)
            target = torch.where(flip, majority, labels)
            weight = torch.where(flip, torch.ones_like(weight), weight)
    return AgreementStats(majority, agreement, support, margin, ema[:, 0], ema[:, 1], category, weight, target)


# ------------------------------------------------------------------------------------------------ dispatch

MAX_KERNEL_CLIPS, MAX_KERNEL_CLASSES = 8, 16  # as rdfer.kernels.agreement (not imported: it imports triton)


def _use_kernel(clip_logits: Tensor, memory: Tensor) -> bool:
    wanted = dispatch.mode()
    if wanted == "reference":
        return False
    fits = (clip_logits.dim() == 3 and 1 <= clip_logits.shape[1] <= MAX_KERNEL_CLIPS
            and 1 <= clip_logits.shape[2] <= MAX_KERNEL_CLASSES and memory.dtype == torch.float32)
    if dispatch.triton_usable(clip_logits.device) and fits:
        return True
    if wanted == "fast":
        raise RuntimeError(
            "RDFER_KERNELS=fast but the agreement kernel cannot run here: it needs Triton and a CUDA device "
            f"(or TRITON_INTERPRET=1 on CPU), K <= {MAX_KERNEL_CLIPS} clips, C <= {MAX_KERNEL_CLASSES} classes "
            f"and a float32 memory; got {clip_logits.device}, logits {tuple(clip_logits.shape)}, memory "
            f"{memory.dtype}")
    return False


@torch.no_grad()
def agreement(clip_logits: Tensor, labels: Tensor, sample_ids: Tensor, memory: Tensor, params: AgreementParams,
              warm: bool, update_memory: bool = True) -> AgreementStats:
    """The batch's agreement statistics, updating memory rows in place at sample_ids (unique within a batch).
    One Triton launch where it can run (CUDA, or CPU under TRITON_INTERPRET=1; RDFER_KERNELS=reference
    forces the twin), else the twin."""
    if _use_kernel(clip_logits, memory):
        from rdfer.kernels.agreement import agreement_kernel

        return AgreementStats(*agreement_kernel(
            clip_logits, labels, sample_ids, memory, a_min=params.a_min, s_max=params.s_max,
            noisy_weight=params.noisy_weight, momentum=params.momentum, relabel=params.relabel,
            relabel_margin=params.relabel_margin, use_ema=params.use_ema, warm=warm, update_memory=update_memory))
    return agreement_reference(clip_logits, labels, sample_ids, memory, params, warm, update_memory)

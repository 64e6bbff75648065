"""Cross-clip prediction agreement (docs/method.md): hard vs noisy samples, per-sample EMAs, loss weights.

For one batch, from the detail stream's clip logits [B, K, C]:
  p_k = softmax(logits_k); p = mean_k p_k; a_k = argmax p_k (first maximum);
  majority m = the class with the most votes; ties go to the larger p[c], then to the lower class index
  (the package's choice: it equals argmax_c (votes_c + 0.5 * p[c]), first maximum, since 0.5*p < 1);
  A = votes_m / K; S = p[y]; M = max(p) - p[y].
The memory [N, 2] (float32, NaN = not yet seen) holds per-sample EMAs of A and S. The op only reads it: it
returns the rows the memory would hold after this batch,
  ema = x on first sight, else momentum * ema + (1 - momentum) * x,
as `AgreementStats.ema_rows`, and committing them (`memory[sample_ids] = stats.ema_rows`) is the caller's
job, once it knows the step is kept. Sample ids are unique within a batch (a repeated id would get one of its
rows at the commit).
Categories use the EMAs (config `robust.use_ema`, default on) and the current majority:
  easy:  A >= a_min and m == y            -> weight 1
  noisy: A >= a_min and m != y and S < s_max -> weight noisy_weight, or with relabel and M > relabel_margin:
                                              target := m with weight 1
  hard:  otherwise                         -> weight 1 + (1 - A)
Before the warm-up ends (`warm=False`) categories are still reported but every weight is 1 and no target
changes. Nothing here carries a gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from rdfer.ops import dispatch
from rdfer.robust.categories import Category


@dataclass(frozen=True)
class AgreementParams:
    noisy_weight: float  # no default here: a caller's config says it (robust.noisy_weight)
    a_min: float = 0.75
    s_max: float = 0.2
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
    ema_rows: Tensor  # [B, 2] float32: the memory rows (EMA of A, EMA of S) after this batch, not yet stored
    category: Tensor  # [B] int64: a Category code
    weight: Tensor  # [B] float32
    target: Tensor  # [B] int64: the label, or m where relabelled

    @property
    def ema_agreement(self) -> Tensor:
        return self.ema_rows[:, 0]

    @property
    def ema_support(self) -> Tensor:
        return self.ema_rows[:, 1]


@torch.no_grad()
def majority_vote(clip_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The clips' vote, the package's rule (module doc): (p [B, C] the mean probabilities, m [B] int64 the
    majority class, A [B] the share of the K clips that voted for it)."""
    b, k, c = clip_logits.shape
    probs = clip_logits.float().softmax(dim=-1)
    mean = probs.mean(dim=1)
    votes = torch.zeros(b, c, device=probs.device).scatter_add_(
        1, probs.argmax(dim=-1), torch.ones(b, k, device=probs.device)
    )
    majority = (votes + 0.5 * mean).argmax(dim=-1)
    return mean, majority, votes.gather(1, majority[:, None]).squeeze(1) / k


@torch.no_grad()
def agreement_reference(
    clip_logits: Tensor,
    labels: Tensor,
    sample_ids: Tensor,
    memory: Tensor,
    params: AgreementParams,
    warm: bool,
) -> AgreementStats:
    b = clip_logits.shape[0]
    labels = labels.long()  # the targets are int64 whatever the labels' integer type
    mean, majority, agreement = majority_vote(clip_logits)
    support = mean.gather(1, labels[:, None]).squeeze(1)
    margin = mean.max(dim=-1).values - support

    current = torch.stack([agreement, support], dim=1)
    old = memory[sample_ids]
    ema = torch.where(torch.isnan(old), current, params.momentum * old + (1 - params.momentum) * current)
    a, s = (ema[:, 0], ema[:, 1]) if params.use_ema else (agreement, support)

    agree = a >= params.a_min
    is_easy = agree & (majority == labels)
    is_noisy = agree & (majority != labels) & (s < params.s_max)
    easy, hard, noisy = map(int, (Category.EASY, Category.HARD, Category.NOISY))  # torch.compile wants ints
    category = torch.full((b,), hard, dtype=torch.long, device=mean.device)
    category[is_easy] = easy
    category[is_noisy] = noisy

    weight = torch.ones(b, device=mean.device)
    target = labels.clone()
    if warm:
        weight = torch.where(category == hard, 1 + (1 - a), weight)
        weight = torch.where(is_noisy, torch.full_like(weight, params.noisy_weight), weight)
        if params.relabel:
            flip = is_noisy & (margin > params.relabel_margin)
            target = torch.where(flip, majority, labels)
            weight = torch.where(flip, torch.ones_like(weight), weight)
    return AgreementStats(majority, agreement, support, margin, ema, category, weight, target)


# ------------------------------------------------------------------------------------------------ dispatch


def _kernel():
    from rdfer.kernels import agreement  # imports triton: only once Triton can run here

    return agreement


def _context(clip_logits: Tensor) -> str:
    return f"{clip_logits.device}, logits {tuple(clip_logits.shape)}"


@torch.no_grad()
def agreement(
    clip_logits: Tensor,
    labels: Tensor,
    sample_ids: Tensor,
    memory: Tensor,
    params: AgreementParams,
    warm: bool,
) -> AgreementStats:
    """The batch's agreement statistics and would-be memory rows; `memory` is read, never written. One Triton
    launch where it can run (CUDA, or CPU under TRITON_INTERPRET=1; RDFER_KERNELS=reference forces the twin),
    else the twin."""
    inputs = (clip_logits, labels, sample_ids, memory)
    if dispatch.use_triton("agreement", inputs, _kernel, lambda: _context(clip_logits)):
        return AgreementStats(*_kernel().agreement_kernel(*inputs, **dataclasses.asdict(params), warm=warm))
    return agreement_reference(clip_logits, labels, sample_ids, memory, params, warm)

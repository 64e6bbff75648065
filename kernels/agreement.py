"""Triton kernel for the cross-clip agreement of a batch (SPEC §3), one launch for the whole batch.

Defined by rdfer.ops.agreement.agreement_reference; this file is a faster way to compute it. The twin takes
some thirty launches (and a host sync in its boolean indexing) for a few kB of data, so one launch is the win.

One program holds BLOCK_B samples: it walks the K clips (unrolled, K <= 8) with a [BLOCK_B, C] tile (C <= 16),
accumulating the mean probabilities and the votes, then does the majority, A, S, M, the EMA update of the
memory rows (in place) and the category, weight and target. The arithmetic repeats the twin's operation order
in float32, and the launch disables FMA contraction, so the thresholds (A >= a_min, S < s_max) see the same
values as the twin's.

Contract: sample ids are unique within a batch (the twin's scatter `memory[ids] = ema` is undefined for
repeated ids too). The wrapper checks ids and labels are in range on CPU; on CUDA it does not (a check needs a
host sync): there an out-of-range id reads and writes no memory (its EMA is this batch's value) and an
out-of-range label gives NaN support and margin, which makes the loss NaN rather than silently wrong.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_CLIPS = 8
MAX_CLASSES = 16
BLOCK_B = 128
EASY, HARD, NOISY = 0, 1, 2  # as in rdfer.ops.agreement


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Every output buffer comes from here, so tests can poison them and prove each element is written."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _agreement_kernel(
    logits_ptr,
    labels_ptr,
    ids_ptr,
    memory_ptr,
    majority_ptr,
    agreement_ptr,
    support_ptr,
    margin_ptr,
    ema_a_ptr,
    ema_s_ptr,
    category_ptr,
    weight_ptr,
    target_ptr,
    B,
    C,
    N,
    s_b,
    s_k,
    s_c,
    sm_n,
    sm_f,
    a_min,
    s_max,
    noisy_weight,
    momentum,
    one_minus_momentum,
    relabel_margin,
    K: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
    WARM: tl.constexpr,
    RELABEL: tl.constexpr,
    USE_EMA: tl.constexpr,
    UPDATE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_C)
    row_ok = rows < B
    col_ok = cols < C
    mask = row_ok[:, None] & col_ok[None, :]

    prob_sum = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    votes = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for k in tl.static_range(K):
        x = tl.load(
            logits_ptr + rows[:, None] * s_b + k * s_k + cols[None, :] * s_c, mask=mask, other=float("-inf")
        ).to(tl.float32)
        x = tl.where(row_ok[:, None], x, 0.0)  # padded rows: a harmless uniform softmax, never stored
        e = tl.exp(x - tl.max(x, axis=1)[:, None])
        p = e / tl.sum(e, axis=1)[:, None]
        vote = tl.argmax(p, axis=1, tie_break_left=True)  # first maximum, as torch.argmax
        votes += tl.where(cols[None, :] == vote[:, None], 1.0, 0.0)
        prob_sum += p
    mean = prob_sum / K

    # Majority: most votes, then larger mean probability, then lower index (the twin's votes + 0.5 * mean).
    score = tl.where(col_ok[None, :], votes + 0.5 * mean, float("-inf"))
    majority = tl.argmax(score, axis=1, tie_break_left=True)
    is_majority = cols[None, :] == majority[:, None]
    agreement = tl.sum(tl.where(is_majority, votes, 0.0), axis=1) / K

    labels = tl.load(labels_ptr + rows, mask=row_ok, other=0)
    label_ok = (labels >= 0) & (labels < C)
    support = tl.sum(tl.where(cols[None, :] == labels[:, None], mean, 0.0), axis=1)
    support = tl.where(label_ok, support, float("nan"))
    margin = tl.max(tl.where(col_ok[None, :], mean, float("-inf")), axis=1) - support

    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0)
    id_ok = row_ok & (ids >= 0) & (ids < N)
    mem_a = memory_ptr + ids * sm_n
    mem_s = mem_a + sm_f
    old_a = tl.load(mem_a, mask=id_ok, other=float("nan"))
    old_s = tl.load(mem_s, mask=id_ok, other=float("nan"))
    blend_a = momentum * old_a + one_minus_momentum * agreement
    blend_s = momentum * old_s + one_minus_momentum * support
    # NaN = first sight (x != x is the NaN test)
    ema_a = tl.where(old_a != old_a, agreement, blend_a)  # noqa: PLR0124
    ema_s = tl.where(old_s != old_s, support, blend_s)  # noqa: PLR0124
    if UPDATE:
        tl.store(mem_a, ema_a, mask=id_ok)
        tl.store(mem_s, ema_s, mask=id_ok)

    if USE_EMA:
        a = ema_a
        s = ema_s
    else:
        a = agreement
        s = support
    agree = a >= a_min
    is_easy = agree & (majority == labels)
    is_noisy = agree & (majority != labels) & (s < s_max)
    category = tl.where(is_easy, 0, tl.where(is_noisy, 2, 1))  # EASY, NOISY, HARD

    weight = tl.full([BLOCK_B], 1.0, dtype=tl.float32)
    target = labels.to(tl.int64)
    if WARM:
        weight = tl.where(category == 1, 1.0 + (1.0 - a), weight)
        weight = tl.where(is_noisy, noisy_weight, weight)
        if RELABEL:
            flip = is_noisy & (margin > relabel_margin)
            target = tl.where(flip, majority.to(tl.int64), target)
            weight = tl.where(flip, 1.0, weight)

    tl.store(majority_ptr + rows, majority.to(tl.int64), mask=row_ok)
    tl.store(agreement_ptr + rows, agreement, mask=row_ok)
    tl.store(support_ptr + rows, support, mask=row_ok)
    tl.store(margin_ptr + rows, margin, mask=row_ok)
    tl.store(ema_a_ptr + rows, ema_a, mask=row_ok)
    tl.store(ema_s_ptr + rows, ema_s, mask=row_ok)
    tl.store(category_ptr + rows, category.to(tl.int64), mask=row_ok)
    tl.store(weight_ptr + rows, weight, mask=row_ok)
    tl.store(target_ptr + rows, target, mask=row_ok)


def check_inputs(clip_logits: Tensor, labels: Tensor, sample_ids: Tensor, memory: Tensor) -> None:
    if clip_logits.dim() != 3:
        raise ValueError(f"clip logits must be [B, K, C], got shape {tuple(clip_logits.shape)}")
    b, k, c = clip_logits.shape
    if not 1 <= k <= MAX_CLIPS or not 1 <= c <= MAX_CLASSES:
        raise ValueError(
            f"the agreement kernel holds 1..{MAX_CLIPS} clips and 1..{MAX_CLASSES} classes, got K={k}, C={c}"
        )
    if labels.shape != (b,) or sample_ids.shape != (b,):
        raise ValueError(
            f"labels and sample ids must be [B] = [{b}], got {tuple(labels.shape)}, {tuple(sample_ids.shape)}"
        )
    if labels.is_floating_point() or sample_ids.is_floating_point():
        raise ValueError(
            f"labels and sample ids must be integer tensors, got {labels.dtype}, {sample_ids.dtype}"
        )
    if memory.dim() != 2 or memory.shape[1] != 2 or memory.dtype != torch.float32:
        raise ValueError(f"agreement memory must be float32 [N, 2], got {memory.dtype} {tuple(memory.shape)}")
    devices = {t.device for t in (clip_logits, labels, sample_ids, memory)}
    if len(devices) != 1:
        raise ValueError(f"agreement inputs must be on one device, got {sorted(map(str, devices))}")
    if clip_logits.device.type == "cpu" and b:  # free here; on CUDA it would cost a host sync
        if int(labels.min()) < 0 or int(labels.max()) >= c:
            raise ValueError(f"labels must be in [0, {c}), got [{int(labels.min())}, {int(labels.max())}]")
        if int(sample_ids.min()) < 0 or int(sample_ids.max()) >= memory.shape[0]:
            raise ValueError(
                f"sample ids must be in [0, {memory.shape[0]}) (the memory's rows), got "
                f"[{int(sample_ids.min())}, {int(sample_ids.max())}]"
            )


def agreement_kernel(
    clip_logits: Tensor,
    labels: Tensor,
    sample_ids: Tensor,
    memory: Tensor,
    *,
    a_min: float,
    s_max: float,
    noisy_weight: float,
    momentum: float,
    relabel: bool,
    relabel_margin: float,
    use_ema: bool,
    warm: bool,
    update_memory: bool,
) -> tuple[Tensor, ...]:
    """One launch. Returns (majority, agreement, support, margin, ema_agreement, ema_support, category, weight,
    target), in the order of rdfer.ops.agreement.AgreementStats. Updates memory in place (if update_memory)."""
    check_inputs(clip_logits, labels, sample_ids, memory)
    b, k, c = clip_logits.shape
    dev = clip_logits.device
    floats = _empty((6, b), torch.float32, dev)
    ints = _empty((3, b), torch.int64, dev)
    majority, category, target = ints
    agreement, support, margin, ema_a, ema_s, weight = floats
    if b:
        _agreement_kernel[(triton.cdiv(b, BLOCK_B),)](
            clip_logits,
            labels.contiguous(),
            sample_ids.contiguous(),
            memory,
            majority,
            agreement,
            support,
            margin,
            ema_a,
            ema_s,
            category,
            weight,
            target,
            b,
            c,
            memory.shape[0],
            *clip_logits.stride(),
            *memory.stride(),
            float(a_min),
            float(s_max),
            float(noisy_weight),
            float(momentum),
            1.0 - float(momentum),
            float(relabel_margin),
            K=k,
            BLOCK_B=BLOCK_B,
            BLOCK_C=max(2, triton.next_power_of_2(c)),
            WARM=bool(warm),
            RELABEL=bool(relabel),
            USE_EMA=bool(use_ema),
            UPDATE=bool(update_memory),
            num_warps=4,
            enable_fp_fusion=False,
        )
    return majority, agreement, support, margin, ema_a, ema_s, category, weight, target

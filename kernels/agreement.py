"""Triton kernel for the cross-clip agreement of a batch (docs/method.md), one launch for the whole batch.

Defined by rdfer.ops.agreement.agreement_reference; this file is a faster way to compute it. The twin takes
some thirty launches (and a host sync in its boolean indexing) for a few kB of data, so one launch is the win.

One program holds BLOCK_B samples, in three stages kept apart so each can change on its own: the per-clip
pass (softmax and vote of each of the K clips, as [BLOCK_B, C] tiles: the mean probabilities and the votes),
the statistics (majority, A, S, M, and the EMA rows from the memory), and the decision (category, weight,
target). The memory is only read: the new EMA rows are an output the caller commits. The arithmetic repeats
the twin's operation order in float32, and the launch disables FMA contraction, so the thresholds
(A >= a_min, S < s_max) see the same values as the twin's.

The flags (warm, relabel, use_ema) and K are run-time arguments, not tl.constexpr: a handful of selects per
sample costs nothing here, and the end of the warm-up does not compile a new kernel mid-training.

Contract: on CPU the wrapper checks that ids and labels are in range; on CUDA it does not (a check needs a
host sync): there an out-of-range id reads no memory (its EMA row is this batch's value) and an out-of-range
label gives NaN support and margin, which makes the loss NaN rather than silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from rdfer.robust.categories import Category

from . import _launch

# One program holds AGREEMENT_BLOCK_B samples, each as a [K, C] tile.
AGREEMENT_MAX_CLIPS = 8
AGREEMENT_MAX_CLASSES = 16
AGREEMENT_BLOCK_B = 128
AGREEMENT_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # others are cast to float32 first


@triton.jit
def _clip_votes(
    logits_ptr, rows, cols, row_ok, col_ok, s_b, s_k, s_c, K, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr
):
    """The per-clip pass: each clip's softmax and vote (first maximum, as torch.argmax). Returns the mean
    probabilities and the votes, both fp32 [BLOCK_B, BLOCK_C]."""
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * s_b + cols[None, :].to(tl.int64) * s_c  # rows are int64 too
    prob_sum = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    votes = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for _ in range(K):
        x = tl.load(logits_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        x = tl.where(row_ok[:, None], x, 0.0)  # padded rows: a harmless uniform softmax, never stored
        e = tl.exp(x - tl.max(x, axis=1)[:, None])
        p = e / tl.sum(e, axis=1)[:, None]
        vote = tl.argmax(p, axis=1, tie_break_left=True)
        votes += tl.where(cols[None, :] == vote[:, None], 1.0, 0.0)
        prob_sum += p
        offs += s_k  # int64: the next clip
    return prob_sum / K, votes


@triton.jit
def _statistics(mean, votes, cols, col_ok, labels, C, K):
    """Majority (most votes, then larger mean probability, then lower index: the twin's votes + 0.5 * mean),
    A, S and M of each sample."""
    score = tl.where(col_ok[None, :], votes + 0.5 * mean, float("-inf"))
    majority = tl.argmax(score, axis=1, tie_break_left=True)
    agreement = tl.sum(tl.where(cols[None, :] == majority[:, None], votes, 0.0), axis=1) / K
    support = tl.sum(tl.where(cols[None, :] == labels[:, None], mean, 0.0), axis=1)
    support = tl.where((labels >= 0) & (labels < C), support, float("nan"))
    margin = tl.max(tl.where(col_ok[None, :], mean, float("-inf")), axis=1) - support
    return majority, agreement, support, margin


@triton.jit
def _ema_rows(memory_ptr, ids, id_ok, sm_n, sm_f, agreement, support, momentum, one_minus_momentum):
    """The memory rows after this batch: this batch's A and S on first sight (NaN row), else the blend."""
    old_a = tl.load(memory_ptr + ids * sm_n, mask=id_ok, other=float("nan"))
    old_s = tl.load(memory_ptr + ids * sm_n + sm_f, mask=id_ok, other=float("nan"))
    blend_a = momentum * old_a + one_minus_momentum * agreement
    blend_s = momentum * old_s + one_minus_momentum * support
    # x != x is the NaN test
    return tl.where(old_a != old_a, agreement, blend_a), tl.where(old_s != old_s, support, blend_s)  # noqa: PLR0124


@triton.jit
def _decide(
    a,
    s,
    majority,
    labels,
    margin,
    a_min,
    s_max,
    noisy_weight,
    relabel_margin,
    warm,
    relabel,
    EASY: tl.constexpr,
    HARD: tl.constexpr,
    NOISY: tl.constexpr,
):
    """Category, weight and target from the A and S the category uses (EMAs or this batch's)."""
    agree = a >= a_min
    is_easy = agree & (majority == labels)
    is_noisy = agree & (majority != labels) & (s < s_max)
    category = tl.where(is_easy, EASY, tl.where(is_noisy, NOISY, HARD))
    weight = tl.where(category == HARD, 1.0 + (1.0 - a), 1.0)
    weight = tl.where(is_noisy, noisy_weight, weight)
    flip = is_noisy & (margin > relabel_margin) & relabel
    target = tl.where(flip, majority.to(tl.int64), labels)
    weight = tl.where(flip, 1.0, weight)
    return category, tl.where(warm, weight, 1.0), tl.where(warm, target, labels)


@triton.jit
def _agreement_kernel(
    logits_ptr,  # [B, K, C] fp32, bf16 or fp16, strides s_b, s_k, s_c
    labels_ptr,  # [B] int64, contiguous
    ids_ptr,  # [B] int64, contiguous: each sample's memory row
    memory_ptr,  # [N, 2] fp32, strides sm_n, sm_f: EMA of A and S per sample, NaN = not yet seen; read only
    majority_ptr,  # [B] int64, contiguous; likewise every output below
    agreement_ptr,  # [B] fp32
    support_ptr,  # [B] fp32
    margin_ptr,  # [B] fp32
    ema_ptr,  # [B, 2] fp32: the memory rows after this batch
    category_ptr,  # [B] int64
    weight_ptr,  # [B] fp32
    target_ptr,  # [B] int64
    B,
    K,  # clips, 1..AGREEMENT_MAX_CLIPS
    C,  # classes, <= BLOCK_C
    N,  # memory rows
    s_b,
    s_k,
    s_c,
    sm_n,
    sm_f,
    a_min,  # fp32 thresholds and weights (rdfer.ops.agreement.AgreementParams)
    s_max,
    noisy_weight,
    momentum,
    one_minus_momentum,
    relabel_margin,
    warm,  # bool: the warm-up is over (weights and targets change)
    relabel,  # bool
    use_ema,  # bool: categories from the EMAs, else from this batch's A and S
    BLOCK_B: tl.constexpr,  # samples per program
    BLOCK_C: tl.constexpr,  # power of two >= max(C, 2)
    EASY: tl.constexpr,  # the Category codes
    HARD: tl.constexpr,
    NOISY: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # grid (cdiv(B, BLOCK_B),)
    cols = tl.arange(0, BLOCK_C)
    row_ok = rows < B
    col_ok = cols < C
    mean, votes = _clip_votes(logits_ptr, rows, cols, row_ok, col_ok, s_b, s_k, s_c, K, BLOCK_B, BLOCK_C)
    labels = tl.load(labels_ptr + rows, mask=row_ok, other=0)
    majority, agreement, support, margin = _statistics(mean, votes, cols, col_ok, labels, C, K)
    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0)
    id_ok = row_ok & (ids >= 0) & (ids < N)
    ema_a, ema_s = _ema_rows(
        memory_ptr, ids, id_ok, sm_n, sm_f, agreement, support, momentum, one_minus_momentum
    )
    a = tl.where(use_ema, ema_a, agreement)
    s = tl.where(use_ema, ema_s, support)
    category, weight, target = _decide(
        a,
        s,
        majority,
        labels,
        margin,
        a_min,
        s_max,
        noisy_weight,
        relabel_margin,
        warm,
        relabel,
        EASY,
        HARD,
        NOISY,
    )
    tl.store(majority_ptr + rows, majority.to(tl.int64), mask=row_ok)
    tl.store(agreement_ptr + rows, agreement, mask=row_ok)
    tl.store(support_ptr + rows, support, mask=row_ok)
    tl.store(margin_ptr + rows, margin, mask=row_ok)
    tl.store(ema_ptr + 2 * rows, ema_a, mask=row_ok)
    tl.store(ema_ptr + 2 * rows + 1, ema_s, mask=row_ok)
    tl.store(category_ptr + rows, category.to(tl.int64), mask=row_ok)
    tl.store(weight_ptr + rows, weight, mask=row_ok)
    tl.store(target_ptr + rows, target, mask=row_ok)


# ----------------------------------------------------------------------------------------------- host side


def kernel_problem(clip_logits: Tensor, labels: Tensor, sample_ids: Tensor, memory: Tensor) -> str | None:
    """Why this kernel cannot take these inputs (None: it can): rdfer.ops.agreement runs its twin then, and a
    direct launch raises this text. The twin takes any shapes."""
    if clip_logits.dim() != 3 or not clip_logits.is_floating_point():
        shape = tuple(clip_logits.shape)
        return f"clip logits must be floating point [B, K, C], got {clip_logits.dtype} {shape}"
    b, k, c = clip_logits.shape
    if not 1 <= k <= AGREEMENT_MAX_CLIPS or not 1 <= c <= AGREEMENT_MAX_CLASSES:
        limits = f"1..{AGREEMENT_MAX_CLIPS} clips and 1..{AGREEMENT_MAX_CLASSES} classes"
        return f"it holds {limits}, got K={k}, C={c}"
    if labels.shape != (b,) or sample_ids.shape != (b,):
        return (
            f"labels and sample ids must be [B] = [{b}], got {tuple(labels.shape)}, {tuple(sample_ids.shape)}"
        )
    if labels.is_floating_point() or sample_ids.is_floating_point():
        return f"labels and sample ids must be integer tensors, got {labels.dtype}, {sample_ids.dtype}"
    if memory.dim() != 2 or memory.shape[1] != 2 or memory.dtype != torch.float32:
        return f"agreement memory must be float32 [N, 2], got {memory.dtype} {tuple(memory.shape)}"
    devices = {t.device for t in (clip_logits, labels, sample_ids, memory)}
    if len(devices) != 1:
        return f"its inputs must be on one device, got {sorted(map(str, devices))}"
    return None


@dataclass(frozen=True)
class AgreementConfig:
    """What a launch compiles for: the logits' dtype and the class tile (grid and scalars aside)."""

    logits_dtype: torch.dtype
    block_c: int

    def constexprs(self) -> dict:
        codes = {c.name: int(c) for c in Category}
        return {"BLOCK_B": AGREEMENT_BLOCK_B, "BLOCK_C": self.block_c, **codes}

    def __str__(self) -> str:
        return f"logits {_launch.dtype_name(self.logits_dtype)} BLOCK_C {self.block_c}"


def launch_config(classes: int, logits_dtype: torch.dtype) -> AgreementConfig:
    """The configuration the host launches for C = classes (other logit dtypes are cast to fp32 first)."""
    dtype = logits_dtype if logits_dtype in AGREEMENT_LOGIT_DTYPES else torch.float32
    return AgreementConfig(dtype, max(2, triton.next_power_of_2(classes)))


def configurations() -> list[AgreementConfig]:
    """Every configuration launch_config gives for inputs kernel_problem accepts."""
    found = {launch_config(c, d) for c in range(1, AGREEMENT_MAX_CLASSES + 1) for d in AGREEMENT_LOGIT_DTYPES}
    return sorted(found, key=lambda c: (str(c.logits_dtype), c.block_c))


def check_inputs(clip_logits: Tensor, labels: Tensor, sample_ids: Tensor, memory: Tensor) -> None:
    problem = kernel_problem(clip_logits, labels, sample_ids, memory)
    if problem:
        raise ValueError(f"agreement kernel: {problem}")
    b, _, c = clip_logits.shape
    if clip_logits.device.type == "cpu" and b:  # free here; on CUDA it would cost a host sync
        if int(labels.min()) < 0 or int(labels.max()) >= c:
            raise ValueError(f"labels must be in [0, {c}), got [{int(labels.min())}, {int(labels.max())}]")
        if int(sample_ids.min()) < 0 or int(sample_ids.max()) >= memory.shape[0]:
            raise ValueError(
                f"sample ids must be in [0, {memory.shape[0]}) (the memory's rows), got "
                f"[{int(sample_ids.min())}, {int(sample_ids.max())}]"
            )


# A compile-only launch's rules: any values do, only their types reach the compiled kernel.
_ANY_RULES = dict(
    a_min=0.75,
    s_max=0.2,
    noisy_weight=0.0,
    momentum=0.9,
    relabel=False,
    relabel_margin=0.5,
    use_ema=True,
    warm=True,
)


def _job(logits, labels, ids, memory, rules: dict, outputs, stages) -> _launch.Launch:
    """The launch; rules: agreement_kernel's keywords; outputs: (majority, agreement, support, margin, ema
    rows, category, weight, target)."""
    b, k, c = logits.shape
    cfg = launch_config(c, logits.dtype)
    momentum = rules["momentum"]
    thresholds = (rules["a_min"], rules["s_max"], rules["noisy_weight"], momentum, 1.0 - momentum)
    scalars = (b, k, c, memory.shape[0], *logits.stride(), *memory.stride(), *map(float, thresholds))
    flags = (bool(rules["warm"]), bool(rules["relabel"]), bool(rules["use_ema"]))
    args = (logits, labels, ids, memory, *outputs, *scalars, float(rules["relabel_margin"]), *flags)
    fp_exact = {"enable_fp_fusion": False}  # no FMA contraction: the twin's roundings, bit for bit
    return _launch.Launch("agreement", _agreement_kernel, args, cfg.constexprs(), 4, stages, fp_exact)


def _compile_jobs(logits, labels, ids, memory, stages: int) -> list[_launch.Launch]:
    f32, i64 = torch.float32, torch.int64
    outputs = (i64, f32, f32, f32, f32, i64, f32, i64)  # dtypes stand in for the buffers a launch allocates
    return [_job(logits, labels, ids, memory, _ANY_RULES, outputs, stages)]


def _kernel_inputs(clip_logits, labels, sample_ids, memory) -> tuple[Tensor, ...]:
    logits = clip_logits if clip_logits.dtype in AGREEMENT_LOGIT_DTYPES else clip_logits.float()
    return logits, labels.to(torch.int64).contiguous(), sample_ids.to(torch.int64).contiguous(), memory


def pipelining(
    clip_logits: Tensor, labels: Tensor, sample_ids: Tensor, memory: Tensor
) -> tuple[int | None, str]:
    """(num_stages, "") where the kernel fits the device's shared memory for these inputs, else (None,
    why)."""
    config = launch_config(clip_logits.shape[2], clip_logits.dtype)
    inputs = (clip_logits, labels, sample_ids, memory)
    return _launch.fitting_stages(
        config, clip_logits.device, lambda s: _compile_jobs(*_kernel_inputs(*inputs), s)
    )


def example_jobs(config: AgreementConfig, stages: int) -> list[_launch.Launch]:
    """The launch for a batch of this configuration on the meta device (for compiling only)."""
    logits = torch.empty(256, 4, config.block_c, dtype=config.logits_dtype, device="meta")
    labels = torch.empty(256, dtype=torch.int64, device="meta")
    return _compile_jobs(logits, labels, labels, torch.empty(512, 2, device="meta"), stages)


def agreement_kernel(
    clip_logits: Tensor,
    labels: Tensor,
    sample_ids: Tensor,
    memory: Tensor,
    **rules: float | bool,
) -> tuple[Tensor, ...]:
    """One launch. `rules`: a_min, s_max, noisy_weight, momentum, relabel, relabel_margin, use_ema (the
    fields of rdfer.ops.agreement.AgreementParams) and warm. Returns (majority, agreement, support, margin,
    ema_rows, category, weight, target), in the order of rdfer.ops.agreement.AgreementStats. Reads memory;
    writes nothing but its outputs."""
    if rules.keys() != _ANY_RULES.keys():
        raise TypeError(f"agreement kernel: rules must be {sorted(_ANY_RULES)}, got {sorted(rules)}")
    check_inputs(clip_logits, labels, sample_ids, memory)
    stages, why = pipelining(clip_logits, labels, sample_ids, memory)
    if stages is None:
        raise RuntimeError(f"the agreement kernel cannot run on {clip_logits.device}: {why}")
    logits, labels, ids, memory = _kernel_inputs(clip_logits, labels, sample_ids, memory)
    b, dev = logits.shape[0], logits.device
    majority, category, target = _launch.empty((3, b), torch.int64, dev)
    agreement, support, margin, weight = _launch.empty((4, b), torch.float32, dev)
    ema_rows = _launch.empty((b, 2), torch.float32, dev)
    outputs = (majority, agreement, support, margin, ema_rows, category, weight, target)
    if b:
        job = _job(logits, labels, ids, memory, rules, outputs, stages)
        _launch.launch(job, (triton.cdiv(b, AGREEMENT_BLOCK_B),), dev)
    return outputs

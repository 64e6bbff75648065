"""Triton kernels for one stream's temporal attention gate: out = x * sigmoid(LayerNorm(MHSA)).

Defined by rdfer.ops.attention_gate.attention_gate_reference; this file is a faster way to compute it: the
whole gate, attention through LayerNorm, sigmoid and product, is one launch forward and one backward. (RDFER's
two streams cannot share a launch: the detail stream's input comes from the synopsis stream's output.)

Layout of the work. The LayerNorm spans all heads of an instance (H*d = 1024 at the paper's shape), so one
program owns one batch item: all H heads of all L instances (L = 16 or 4). It walks the heads twice: pass 1
computes each head's attention output and merges per-head LayerNorm statistics (Chan's parallel variance, so
no E[x^2] - E[x]^2 cancellation); pass 2 recomputes each head, normalises, gates and writes.

Why recompute instead of saving the pre-LN heads (flash style): at L <= 16 a head's attention is two
[16, 16] x [16, d] products, a few hundred kFLOP per batch item, while saving the heads would cost a
[B, L, H*d] fp32 write in the forward and a read in the backward (as much traffic as q and k together in
bf16). The re-reads of q, k, v inside a program come from L2. The backward saves only mean and rstd [B, L].

Precision: softmax, LayerNorm and all accumulation run in fp32, as in the twin. fp32 inputs use exact fp32
products ("ieee"); bf16 inputs use TF32 tensor-core products for the fp32 operands (P, dO, dS; 10-bit
mantissa, 4x finer than the bf16 rounding of the result) and exact products of the bf16 operands. The
LayerNorm affine gradients are summed deterministically: one row of partial sums per batch item, reduced on
the host.

Offsets: program ids, tile indices and per-head offsets are int64 before they meet a stride, so tensors past
2^31 elements and views with large strides address correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import _launch
from ._launch import round_to

# One program holds all heads of all instances of one batch item.
GATE_MAX_INSTANCES = 64
GATE_MAX_HEAD_DIM = 256
GATE_DTYPES = (torch.float32, torch.bfloat16)  # of q, k, v (one dtype) and, separately, of x


@triton.jit
def _tile_offsets(s_row, s_col, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """int64 [BLOCK_R, BLOCK_C] offsets of a tile with these row and column strides."""
    rows = tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.arange(0, BLOCK_C).to(tl.int64)
    return rows[:, None] * s_row + cols[None, :] * s_col


@triton.jit
def _head_attention(
    q_head, k_head, v_head, offs, mask, L, sqrt_d, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr
):
    """One head: q, k, v as fp32 [BLOCK_L, BLOCK_D] (zero padded), softmax P [BLOCK_L, BLOCK_L], O = P V."""
    q = tl.load(q_head + offs, mask=mask, other=0.0).to(tl.float32)
    k = tl.load(k_head + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_head + offs, mask=mask, other=0.0).to(tl.float32)
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) / sqrt_d
    keys = tl.arange(0, BLOCK_L)
    scores = tl.where(keys[None, :] < L, scores, float("-inf"))  # padded keys get no weight
    p = tl.exp(scores - tl.max(scores, axis=1)[:, None])
    p = p / tl.sum(p, axis=1)[:, None]
    o = tl.dot(p, v, input_precision=PRECISION)
    return q, k, v, p, o


@triton.jit
def _ln_stats(
    q_ptr,
    k_ptr,
    v_ptr,
    base,
    s_h,
    offs,
    mask,
    L,
    H,
    D_HEAD,
    sqrt_d,
    eps,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Mean and 1/std over all H*d head outputs of each instance, merging heads with Chan's formula."""
    cols = tl.arange(0, BLOCK_D)
    mean = tl.zeros([BLOCK_L], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_L], dtype=tl.float32)
    head = base
    for h in range(H):
        o = _head_attention(
            q_ptr + head, k_ptr + head, v_ptr + head, offs, mask, L, sqrt_d, BLOCK_L, PRECISION
        )[4]
        mean_h = tl.sum(o, axis=1) / D_HEAD  # padded columns of o are zero
        diff = tl.where(cols[None, :] < D_HEAD, o - mean_h[:, None], 0.0)
        m2_h = tl.sum(diff * diff, axis=1)
        n_a = (h * D_HEAD).to(tl.float32)
        n_ab = n_a + D_HEAD
        delta = mean_h - mean
        mean = mean + delta * (D_HEAD / n_ab)
        m2 = m2 + m2_h + delta * delta * (n_a * D_HEAD / n_ab)
        head += s_h
    rstd = 1.0 / tl.sqrt(m2 / (H * D_HEAD) + eps)
    return mean, rstd


@triton.jit
def _gate(o, mean, rstd, w_ptr, bias_ptr, col0, D_HEAD, BLOCK_D: tl.constexpr):
    """For one head's output o [BLOCK_L, BLOCK_D] at columns col0 + [0, d) of the instance: the normalised
    heads n (zero where padded), the weight w [BLOCK_D] and the gate sigmoid(n * w + bias)."""
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D_HEAD
    w = tl.load(w_ptr + col0 + cols, mask=col_ok, other=0.0)
    bias = tl.load(bias_ptr + col0 + cols, mask=col_ok, other=0.0)
    n = tl.where(col_ok[None, :], (o - mean[:, None]) * rstd[:, None], 0.0)
    return n, w, tl.sigmoid(n * w[None, :] + bias[None, :])


@triton.jit
def _gate_fwd_kernel(
    q_ptr,  # [B, L, H, d] q, k, v (qkv dtype), one layout: strides s_b, s_l, s_h, s_d
    k_ptr,
    v_ptr,
    x_ptr,  # [B, L, H*d] (x dtype), strides sx_b, sx_l, 1
    w_ptr,  # [H*d] fp32 LayerNorm weight, contiguous
    bias_ptr,  # [H*d] fp32 LayerNorm bias, contiguous
    out_ptr,  # [B, L, H*d] (x dtype), contiguous: the gated x
    mean_ptr,  # [B, L] fp32, contiguous: LayerNorm mean, saved for the backward
    rstd_ptr,  # [B, L] fp32, contiguous: LayerNorm 1/std, saved for the backward
    s_b,
    s_l,
    s_h,
    s_d,
    sx_b,
    sx_l,
    L,  # instances, <= BLOCK_L
    H,  # heads
    D_HEAD,  # head dim d, <= BLOCK_D
    sqrt_d,  # fp32 sqrt(d)
    eps,  # fp32 LayerNorm epsilon
    BLOCK_L: tl.constexpr,  # power of two >= max(L, 16) (tl.dot takes no fewer than 16 rows)
    BLOCK_D: tl.constexpr,  # power of two >= max(d, 16)
    PRECISION: tl.constexpr,  # "ieee" for fp32 q, k, v; "tf32" for bf16
    EMULATE_RTNE: tl.constexpr,  # round bf16 outputs on the bits (the interpreter truncates)
):
    b = tl.program_id(0).to(tl.int64)  # grid (B,): one batch item per program
    rows = tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < L
    mask = row_ok[:, None] & (cols[None, :] < D_HEAD)
    offs = _tile_offsets(s_l, s_d, BLOCK_L, BLOCK_D)
    mean, rstd = _ln_stats(
        q_ptr, k_ptr, v_ptr, b * s_b, s_h, offs, mask, L, H, D_HEAD, sqrt_d, eps, BLOCK_L, BLOCK_D, PRECISION
    )
    tl.store(mean_ptr + b * L + rows, mean, mask=row_ok)
    tl.store(rstd_ptr + b * L + rows, rstd, mask=row_ok)
    width = H * D_HEAD
    x_offs = b * sx_b + _tile_offsets(sx_l, 1, BLOCK_L, BLOCK_D)
    out_offs = b * L * width + _tile_offsets(width, 1, BLOCK_L, BLOCK_D)
    head = b * s_b
    col0 = b * 0  # int64 column of the head's first element
    for _ in range(H):
        o = _head_attention(
            q_ptr + head, k_ptr + head, v_ptr + head, offs, mask, L, sqrt_d, BLOCK_L, PRECISION
        )[4]
        gate = _gate(o, mean, rstd, w_ptr, bias_ptr, col0, D_HEAD, BLOCK_D)[2]
        x = tl.load(x_ptr + x_offs + col0, mask=mask, other=0.0).to(tl.float32)
        out = round_to(x * gate, out_ptr.dtype.element_ty, EMULATE_RTNE)
        tl.store(out_ptr + out_offs + col0, out, mask=mask)
        head += s_h
        col0 += D_HEAD


@triton.jit
def _gate_bwd_kernel(
    q_ptr,  # [B, L, H, d] q, k, v (qkv dtype), one layout: strides s_b, s_l, s_h, s_d
    k_ptr,
    v_ptr,
    x_ptr,  # [B, L, H*d] (x dtype), strides sx_b, sx_l, 1
    w_ptr,  # [H*d] fp32 LayerNorm weight, contiguous
    bias_ptr,  # [H*d] fp32 LayerNorm bias, contiguous
    mean_ptr,  # [B, L] fp32, contiguous: from the forward
    rstd_ptr,  # [B, L] fp32, contiguous: from the forward
    dout_ptr,  # [B, L, H*d] (x dtype), contiguous: d loss / d out
    dq_ptr,  # [B, L, H, d] (qkv dtype), contiguous: d loss / d q, likewise dk, dv
    dk_ptr,
    dv_ptr,
    dx_ptr,  # [B, L, H*d] (x dtype), contiguous
    dw_ptr,  # [B, H*d] fp32, contiguous: per batch item partial sums of d loss / d weight
    dbias_ptr,  # [B, H*d] fp32, contiguous: likewise for the bias
    s_b,
    s_l,
    s_h,
    s_d,
    sx_b,
    sx_l,
    L,  # instances, <= BLOCK_L
    H,  # heads
    D_HEAD,  # head dim d, <= BLOCK_D
    sqrt_d,  # fp32 sqrt(d)
    BLOCK_L: tl.constexpr,  # as in the forward
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # grid (B,): one batch item per program
    rows = tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < L
    mask = row_ok[:, None] & (cols[None, :] < D_HEAD)
    offs = _tile_offsets(s_l, s_d, BLOCK_L, BLOCK_D)
    width = H * D_HEAD
    x_offs = b * sx_b + _tile_offsets(sx_l, 1, BLOCK_L, BLOCK_D)
    g_offs = b * L * width + _tile_offsets(width, 1, BLOCK_L, BLOCK_D)  # dout, dx, dq, dk, dv
    mean = tl.load(mean_ptr + b * L + rows, mask=row_ok, other=0.0)
    rstd = tl.load(rstd_ptr + b * L + rows, mask=row_ok, other=0.0)

    # Pass A: dx, the LayerNorm affine partial sums, and the two per-instance sums the LayerNorm backward
    # needs over all heads: sum(dn) and sum(dn * n), where dn = d loss / d n.
    sum_dn = tl.zeros([BLOCK_L], dtype=tl.float32)
    sum_dn_n = tl.zeros([BLOCK_L], dtype=tl.float32)
    head = b * s_b
    col0 = b * 0  # int64 column of the head's first element
    for _ in range(H):
        o = _head_attention(
            q_ptr + head, k_ptr + head, v_ptr + head, offs, mask, L, sqrt_d, BLOCK_L, PRECISION
        )[4]
        n, w, gate = _gate(o, mean, rstd, w_ptr, bias_ptr, col0, D_HEAD, BLOCK_D)
        x = tl.load(x_ptr + x_offs + col0, mask=mask, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + g_offs + col0, mask=mask, other=0.0).to(tl.float32)
        tl.store(
            dx_ptr + g_offs + col0, round_to(dout * gate, dx_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask
        )
        dy = dout * x * gate * (1.0 - gate)  # through the sigmoid; zero where padded since dout is
        tl.store(dw_ptr + b * width + col0 + cols, tl.sum(dy * n, axis=0), mask=cols < D_HEAD)
        tl.store(dbias_ptr + b * width + col0 + cols, tl.sum(dy, axis=0), mask=cols < D_HEAD)
        sum_dn += tl.sum(dy * w[None, :], axis=1)
        sum_dn_n += tl.sum(dy * w[None, :] * n, axis=1)
        head += s_h
        col0 += D_HEAD
    mean_dn = sum_dn / width
    mean_dn_n = sum_dn_n / width

    # Pass B: through the LayerNorm into each head's output, then the attention backward.
    head = b * s_b
    col0 = b * 0
    for _ in range(H):
        q, k, v, p, o = _head_attention(
            q_ptr + head, k_ptr + head, v_ptr + head, offs, mask, L, sqrt_d, BLOCK_L, PRECISION
        )
        n, w, gate = _gate(o, mean, rstd, w_ptr, bias_ptr, col0, D_HEAD, BLOCK_D)
        x = tl.load(x_ptr + x_offs + col0, mask=mask, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + g_offs + col0, mask=mask, other=0.0).to(tl.float32)
        dn = dout * x * gate * (1.0 - gate) * w[None, :]
        do = tl.where(mask, rstd[:, None] * (dn - mean_dn[:, None] - n * mean_dn_n[:, None]), 0.0)
        dv = tl.dot(tl.trans(p), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        # zero on padded rows (do = 0) and padded keys (p = 0)
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None]) / sqrt_d
        dq = tl.dot(ds, k, input_precision=PRECISION)
        dk = tl.dot(tl.trans(ds), q, input_precision=PRECISION)
        tl.store(dq_ptr + g_offs + col0, round_to(dq, dq_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask)
        tl.store(dk_ptr + g_offs + col0, round_to(dk, dk_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask)
        tl.store(dv_ptr + g_offs + col0, round_to(dv, dv_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask)
        head += s_h
        col0 += D_HEAD


# ----------------------------------------------------------------------------------------------- host side


@dataclass(frozen=True)
class GateConfig:
    """What a launch compiles for: the dtypes and the tile sizes (grid and scalars aside)."""

    qkv_dtype: torch.dtype
    x_dtype: torch.dtype
    block_l: int
    block_d: int

    @property
    def num_warps(self) -> int:
        return 8 if self.block_d >= 128 else 4

    def constexprs(self) -> dict:
        return {
            "BLOCK_L": self.block_l,
            "BLOCK_D": self.block_d,
            "PRECISION": "ieee" if self.qkv_dtype == torch.float32 else "tf32",
            "EMULATE_RTNE": _launch.INTERPRETED,
        }

    def __str__(self) -> str:
        dtypes = f"qkv {_launch.dtype_name(self.qkv_dtype)} x {_launch.dtype_name(self.x_dtype)}"
        return f"{dtypes} BLOCK_L {self.block_l} BLOCK_D {self.block_d}"


def kernel_problem(q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> str | None:
    """Why this kernel cannot take these inputs (None: it can): rdfer.ops.attention_gate runs its twin then,
    and a direct launch raises this text. The twin takes anything."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        return (
            f"q, k, v must share one shape [B, L, H, d], got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    b, length, h, d = q.shape
    if x.shape != (b, length, h * d) or weight.shape != (h * d,) or bias.shape != (h * d,):
        return (
            f"x must be [B, L, H*d] = {(b, length, h * d)} and weight, bias [{h * d}]; got {tuple(x.shape)}, "
            f"{tuple(weight.shape)}, {tuple(bias.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in GATE_DTYPES or x.dtype not in GATE_DTYPES:
        return (
            f"it takes float32 or bfloat16 q, k, v (one dtype) and x; got {q.dtype}, {k.dtype}, {v.dtype}, "
            f"{x.dtype}"
        )
    if not (weight.is_floating_point() and bias.is_floating_point()):
        return f"the LayerNorm weight and bias must be floating point, got {weight.dtype}, {bias.dtype}"
    if not (1 <= length <= GATE_MAX_INSTANCES and 1 <= h and 1 <= d <= GATE_MAX_HEAD_DIM):
        return (
            f"it holds 1..{GATE_MAX_INSTANCES} instances, at least one head and head dim "
            f"1..{GATE_MAX_HEAD_DIM}; got L={length}, H={h}, d={d}"
        )
    devices = {t.device for t in (q, k, v, x, weight, bias)}
    if len(devices) != 1:
        return f"all its inputs must be on one device, got {sorted(map(str, devices))}"
    return None


def launch_config(length: int, head_dim: int, qkv_dtype: torch.dtype, x_dtype: torch.dtype) -> GateConfig:
    """The configuration the host launches for L = length instances of head dim d."""
    block_l = max(16, triton.next_power_of_2(length))  # tl.dot needs at least 16 rows
    return GateConfig(qkv_dtype, x_dtype, block_l, max(16, triton.next_power_of_2(head_dim)))


def configurations() -> list[GateConfig]:
    """Every configuration launch_config gives for inputs kernel_problem accepts."""
    found = {
        launch_config(length, head_dim, qkv, x)
        for length in range(1, GATE_MAX_INSTANCES + 1)
        for head_dim in range(1, GATE_MAX_HEAD_DIM + 1)
        for qkv in GATE_DTYPES
        for x in GATE_DTYPES
    }
    return sorted(found, key=lambda c: (str(c.qkv_dtype), str(c.x_dtype), c.block_l, c.block_d))


class _Stream:
    """One stream's checked tensors. q, k, v must share one layout (true for the unbind views of a
    [B, L, 3, H, d] projection and for contiguous tensors); otherwise they are made contiguous."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        problem = kernel_problem(q, k, v, x, weight, bias)
        if problem:
            raise ValueError(f"attention gate kernel: {problem}")
        if not (q.stride() == k.stride() == v.stride()):
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        self.q, self.k, self.v = q, k, v
        self.x = x if x.stride(-1) == 1 else x.contiguous()
        self.weight, self.bias, self.eps = weight.float().contiguous(), bias.float().contiguous(), float(eps)
        self.batch, self.length, self.heads, self.head_dim = q.shape
        self.config = launch_config(self.length, self.head_dim, q.dtype, x.dtype)

    def scalars(self) -> tuple:
        """The strides and sizes both kernels take after their tensors."""
        shape = (self.length, self.heads, self.head_dim, math.sqrt(self.head_dim))
        return (*self.q.stride(), *self.x.stride()[:2], *shape)


def _fwd_job(s: _Stream, stages: int, out, mean, rstd) -> _launch.Launch:
    args = (s.q, s.k, s.v, s.x, s.weight, s.bias, out, mean, rstd, *s.scalars(), s.eps)
    cfg = s.config
    return _launch.Launch("gate_fwd", _gate_fwd_kernel, args, cfg.constexprs(), cfg.num_warps, stages)


def _bwd_job(s: _Stream, stages: int, mean, rstd, dout, dq, dk, dv, dx, dw, dbias) -> _launch.Launch:
    args = (s.q, s.k, s.v, s.x, s.weight, s.bias, mean, rstd, dout, dq, dk, dv, dx, dw, dbias, *s.scalars())
    cfg = s.config
    return _launch.Launch("gate_bwd", _gate_bwd_kernel, args, cfg.constexprs(), cfg.num_warps, stages)


_ANY_EPS = 0.5  # compiling only: eps is a run-time fp32 argument, its value changes nothing


def _compile_jobs(s: _Stream, stages: int) -> list[_launch.Launch]:
    """Both launches of a stream, with dtypes standing in for the buffers only a launch allocates."""
    f32, qd, xd = torch.float32, s.q.dtype, s.x.dtype
    return [
        _fwd_job(s, stages, xd, f32, f32),
        _bwd_job(s, stages, f32, f32, xd, qd, qd, qd, xd, f32, f32),
    ]


def pipelining(
    q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor
) -> tuple[int | None, str]:
    """(num_stages, "") where both kernels fit the device's shared memory for these inputs, else (None, why).
    The first call of a configuration on a CUDA device compiles both kernels (see kernels/_launch.py)."""
    config = launch_config(q.shape[1], q.shape[3], q.dtype, x.dtype)
    return _launch.fitting_stages(
        config, q.device, lambda stages: _compile_jobs(_Stream(q, k, v, x, weight, bias, _ANY_EPS), stages)
    )


def example_jobs(config: GateConfig, stages: int) -> list[_launch.Launch]:
    """The launches of a small stream of this configuration, on the meta device (for compiling only)."""
    q, k, v = (
        torch.empty(2, config.block_l, 2, config.block_d, dtype=config.qkv_dtype, device="meta")
        for _ in "qkv"
    )
    x = torch.empty(2, config.block_l, 2 * config.block_d, dtype=config.x_dtype, device="meta")
    weight = torch.empty(2 * config.block_d, device="meta")
    return _compile_jobs(_Stream(q, k, v, x, weight, weight, _ANY_EPS), stages)


def gate_forward(s: _Stream, stages: int) -> tuple[Tensor, Tensor, Tensor]:
    """One launch: (out, mean, rstd)."""
    out = _launch.empty(s.x.shape, s.x.dtype, s.x.device)
    mean, rstd = _launch.empty((2, s.batch, s.length), torch.float32, s.x.device)
    if s.batch:
        _launch.launch(_fwd_job(s, stages, out, mean, rstd), (s.batch,), s.x.device)
    return out, mean, rstd


def gate_backward(s: _Stream, stages: int, mean: Tensor, rstd: Tensor, dout: Tensor) -> tuple[Tensor, ...]:
    """One launch: (dq, dk, dv, dx, dweight, dbias)."""
    dq, dk, dv = _launch.empty((3, *s.q.shape), s.q.dtype, s.q.device)
    dx = _launch.empty(s.x.shape, s.x.dtype, s.x.device)
    # One row of LayerNorm affine partial sums per batch item, reduced below: deterministic, no atomics.
    dw, dbias = _launch.empty((2, s.batch, s.heads * s.head_dim), torch.float32, s.q.device)
    if s.batch:
        job = _bwd_job(s, stages, mean, rstd, dout, dq, dk, dv, dx, dw, dbias)
        _launch.launch(job, (s.batch,), s.q.device)
    return dq, dk, dv, dx, dw.sum(dim=0), dbias.sum(dim=0)


class AttentionGateFunction(torch.autograd.Function):
    """One stream: attention_gate(q, k, v, x, weight, bias, eps) -> [B, L, H*d]."""

    @staticmethod
    def forward(ctx, q, k, v, x, weight, bias, eps):
        stream = _Stream(q, k, v, x, weight, bias, eps)
        stages, why = pipelining(q, k, v, x, weight, bias)
        if stages is None:
            raise RuntimeError(f"the attention gate kernel cannot run on {q.device}: {why}")
        out, mean, rstd = gate_forward(stream, stages)
        ctx.save_for_backward(stream.q, stream.k, stream.v, stream.x, weight, bias, mean, rstd)
        ctx.eps, ctx.stages = stream.eps, stages
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, x, weight, bias, mean, rstd = ctx.saved_tensors
        stream = _Stream(q, k, v, x, weight, bias, ctx.eps)
        dq, dk, dv, dx, dw, db = gate_backward(stream, ctx.stages, mean, rstd, dout.contiguous())
        return dq, dk, dv, dx, dw.to(weight.dtype), db.to(bias.dtype), None

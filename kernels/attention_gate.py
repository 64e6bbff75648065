"""Triton kernels for the temporal attention gate (SPEC §2.3): out = x * sigmoid(LayerNorm(MHSA)).

Defined by rdfer.ops.attention_gate.attention_gate_reference; this file is a faster way to compute it.

Layout of the work. The LayerNorm spans all heads of an instance (H*d = 1024 at the paper's shape), so one
program owns one (stream, batch item): all H heads of all L instances (L = 16 or 4). It walks the heads twice:
pass 1 computes each head's attention output and merges per-head LayerNorm statistics (Chan's parallel
variance, so no E[x^2] - E[x]^2 cancellation); pass 2 recomputes each head, normalises, gates and writes.

Why recompute instead of saving the pre-LN heads (flash style): at L <= 16 a head's attention is two
[16, 16] x [16, d] products, a few hundred kFLOP per batch item, while saving the heads would cost a
[B, L, H*d] fp32 write in the forward and a read in the backward (as much traffic as q and k together in
bf16). The re-reads of q, k, v inside a program come from L2. The backward saves only mean and rstd [B, L].

One launch can hold one stream or two (the synopsis stream, L=16, and the detail stream, L=4): program ids
[0, B0) take stream 0 and [B0, B0 + B1) stream 1. RDFER itself calls one stream at a time, because the
detail stream's input depends on the synopsis stream's output (and its backward runs in the reverse order);
`dual_attention_gate` serves callers whose two streams are independent.

Precision: softmax, LayerNorm and all accumulation run in fp32, as in the twin. fp32 inputs use exact fp32
products ("ieee"); bf16 inputs use TF32 tensor-core products for the fp32 operands (P, dO, dS; 10-bit
mantissa, 4x finer than the bf16 rounding of the result) and exact products of the bf16 operands.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)
MAX_HEAD_DIM = 256


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Every output buffer comes from here, so tests can poison them and prove each element is written."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _round_to(x, dtype: tl.constexpr, EMULATE_RTNE: tl.constexpr):
    """fp32 x in dtype, rounded to nearest even. The Triton interpreter truncates fp32 -> bf16 casts, which
    would double the rounding error of every bf16 output; there the rounding is done on the bits (finite
    values). On the GPU the cast itself rounds to nearest even."""
    if EMULATE_RTNE and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _head_attention(
    q_base,
    k_base,
    v_base,
    s_l,
    s_d,
    L,
    D_HEAD,
    sqrt_d,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One head: q, k, v as fp32 [BLOCK_L, BLOCK_D] (zero padded), softmax P [BLOCK_L, BLOCK_L], O = P V."""
    rows = tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_D)
    offs = rows[:, None] * s_l + cols[None, :] * s_d
    mask = (rows[:, None] < L) & (cols[None, :] < D_HEAD)
    q = tl.load(q_base + offs, mask=mask, other=0.0).to(tl.float32)
    k = tl.load(k_base + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_base + offs, mask=mask, other=0.0).to(tl.float32)
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) / sqrt_d
    scores = tl.where(rows[None, :] < L, scores, float("-inf"))  # padded keys get no weight
    p = tl.exp(scores - tl.max(scores, axis=1)[:, None])
    p = p / tl.sum(p, axis=1)[:, None]
    o = tl.dot(p, v, input_precision=PRECISION)
    return q, k, v, p, o


@triton.jit
def _ln_stats(
    q_ptr,
    k_ptr,
    v_ptr,
    b,
    s_b,
    s_l,
    s_h,
    s_d,
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
    for h in range(H):
        off = b * s_b + h * s_h
        _, _, _, _, o = _head_attention(
            q_ptr + off, k_ptr + off, v_ptr + off, s_l, s_d, L, D_HEAD, sqrt_d, BLOCK_L, BLOCK_D, PRECISION
        )
        mean_h = tl.sum(o, axis=1) / D_HEAD  # padded columns of o are zero
        diff = tl.where(cols[None, :] < D_HEAD, o - mean_h[:, None], 0.0)
        m2_h = tl.sum(diff * diff, axis=1)
        n_a = (h * D_HEAD).to(tl.float32)
        n_ab = n_a + D_HEAD
        delta = mean_h - mean
        mean = mean + delta * (D_HEAD / n_ab)
        m2 = m2 + m2_h + delta * delta * (n_a * D_HEAD / n_ab)
    rstd = 1.0 / tl.sqrt(m2 / (H * D_HEAD) + eps)
    return mean, rstd


@triton.jit
def _fwd_stream(
    b,
    q_ptr,
    k_ptr,
    v_ptr,
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    mean_ptr,
    rstd_ptr,
    s_b,
    s_l,
    s_h,
    s_d,
    sx_b,
    sx_l,
    L,
    H,
    D_HEAD,
    sqrt_d,
    eps,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):
    rows = tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < L
    mask = row_ok[:, None] & (cols[None, :] < D_HEAD)
    mean, rstd = _ln_stats(
        q_ptr, k_ptr, v_ptr, b, s_b, s_l, s_h, s_d, L, H, D_HEAD, sqrt_d, eps, BLOCK_L, BLOCK_D, PRECISION
    )
    tl.store(mean_ptr + b * L + rows, mean, mask=row_ok)
    tl.store(rstd_ptr + b * L + rows, rstd, mask=row_ok)
    width = H * D_HEAD
    for h in range(H):
        off = b * s_b + h * s_h
        _, _, _, _, o = _head_attention(
            q_ptr + off, k_ptr + off, v_ptr + off, s_l, s_d, L, D_HEAD, sqrt_d, BLOCK_L, BLOCK_D, PRECISION
        )
        c = h * D_HEAD + cols
        w = tl.load(w_ptr + c, mask=cols < D_HEAD, other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + c, mask=cols < D_HEAD, other=0.0).to(tl.float32)
        gate = tl.sigmoid((o - mean[:, None]) * rstd[:, None] * w[None, :] + bias[None, :])
        x_offs = b * sx_b + rows[:, None] * sx_l + c[None, :]
        x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
        out = x * gate
        tl.store(
            out_ptr + b * L * width + rows[:, None] * width + c[None, :],
            _round_to(out, out_ptr.dtype.element_ty, EMULATE_RTNE),
            mask=mask,
        )


@triton.jit
def _gate_fwd_kernel(
    q0,
    k0,
    v0,
    x0,
    w0,
    bias0,
    out0,
    mean0,
    rstd0,
    B0,
    L0,
    s0_b,
    s0_l,
    s0_h,
    s0_d,
    sx0_b,
    sx0_l,
    eps0,
    q1,
    k1,
    v1,
    x1,
    w1,
    bias1,
    out1,
    mean1,
    rstd1,
    L1,
    s1_b,
    s1_l,
    s1_h,
    s1_d,
    sx1_b,
    sx1_l,
    eps1,
    H,
    D_HEAD,
    sqrt_d,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION0: tl.constexpr,
    PRECISION1: tl.constexpr,
    TWO_STREAMS: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):
    pid = tl.program_id(0)
    if TWO_STREAMS:
        if pid < B0:
            _fwd_stream(
                pid,
                q0,
                k0,
                v0,
                x0,
                w0,
                bias0,
                out0,
                mean0,
                rstd0,
                s0_b,
                s0_l,
                s0_h,
                s0_d,
                sx0_b,
                sx0_l,
                L0,
                H,
                D_HEAD,
                sqrt_d,
                eps0,
                BLOCK_L,
                BLOCK_D,
                PRECISION0,
                EMULATE_RTNE,
            )
        else:
            _fwd_stream(
                pid - B0,
                q1,
                k1,
                v1,
                x1,
                w1,
                bias1,
                out1,
                mean1,
                rstd1,
                s1_b,
                s1_l,
                s1_h,
                s1_d,
                sx1_b,
                sx1_l,
                L1,
                H,
                D_HEAD,
                sqrt_d,
                eps1,
                BLOCK_L,
                BLOCK_D,
                PRECISION1,
                EMULATE_RTNE,
            )
    else:
        _fwd_stream(
            pid,
            q0,
            k0,
            v0,
            x0,
            w0,
            bias0,
            out0,
            mean0,
            rstd0,
            s0_b,
            s0_l,
            s0_h,
            s0_d,
            sx0_b,
            sx0_l,
            L0,
            H,
            D_HEAD,
            sqrt_d,
            eps0,
            BLOCK_L,
            BLOCK_D,
            PRECISION0,
            EMULATE_RTNE,
        )


@triton.jit
def _gate_terms(
    o,
    mean,
    rstd,
    w_ptr,
    bias_ptr,
    x_ptr,
    dout_ptr,
    b,
    h,
    sx_b,
    sx_l,
    L,
    D_HEAD,
    width,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """For one head: the normalised heads n, the gate g, x, dout and dn = d loss / d n (zero where padded)."""
    rows = tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < L) & (cols[None, :] < D_HEAD)
    c = h * D_HEAD + cols
    w = tl.load(w_ptr + c, mask=cols < D_HEAD, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=cols < D_HEAD, other=0.0).to(tl.float32)
    n = tl.where(mask, (o - mean[:, None]) * rstd[:, None], 0.0)
    gate = tl.sigmoid(n * w[None, :] + bias[None, :])
    x = tl.load(x_ptr + b * sx_b + rows[:, None] * sx_l + c[None, :], mask=mask, other=0.0).to(tl.float32)
    dout = tl.load(dout_ptr + b * L * width + rows[:, None] * width + c[None, :], mask=mask, other=0.0).to(
        tl.float32
    )
    dy = dout * x * gate * (1.0 - gate)  # through the sigmoid; zero where padded since dout is
    return n, gate, x, dout, dy, dy * w[None, :]


@triton.jit
def _bwd_stream(
    b,
    q_ptr,
    k_ptr,
    v_ptr,
    x_ptr,
    w_ptr,
    bias_ptr,
    mean_ptr,
    rstd_ptr,
    dout_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dx_ptr,
    dw_ptr,
    dbias_ptr,
    s_b,
    s_l,
    s_h,
    s_d,
    sx_b,
    sx_l,
    L,
    H,
    D_HEAD,
    sqrt_d,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):
    rows = tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < L
    mask = row_ok[:, None] & (cols[None, :] < D_HEAD)
    width = H * D_HEAD
    mean = tl.load(mean_ptr + b * L + rows, mask=row_ok, other=0.0)
    rstd = tl.load(rstd_ptr + b * L + rows, mask=row_ok, other=0.0)

    # Pass A: dx, the LayerNorm affine gradients (one row of partial sums per batch item), and the two
    # per-instance sums the LayerNorm backward needs over all heads: sum(dn) and sum(dn * n).
    sum_dn = tl.zeros([BLOCK_L], dtype=tl.float32)
    sum_dn_n = tl.zeros([BLOCK_L], dtype=tl.float32)
    for h in range(H):
        off = b * s_b + h * s_h
        _, _, _, _, o = _head_attention(
            q_ptr + off, k_ptr + off, v_ptr + off, s_l, s_d, L, D_HEAD, sqrt_d, BLOCK_L, BLOCK_D, PRECISION
        )
        n, gate, _, dout, dy, dn = _gate_terms(
            o,
            mean,
            rstd,
            w_ptr,
            bias_ptr,
            x_ptr,
            dout_ptr,
            b,
            h,
            sx_b,
            sx_l,
            L,
            D_HEAD,
            width,
            BLOCK_L,
            BLOCK_D,
        )
        c = h * D_HEAD + cols
        tl.store(
            dx_ptr + b * L * width + rows[:, None] * width + c[None, :],
            _round_to(dout * gate, dx_ptr.dtype.element_ty, EMULATE_RTNE),
            mask=mask,
        )
        tl.store(dw_ptr + b * width + c, tl.sum(dy * n, axis=0), mask=cols < D_HEAD)
        tl.store(dbias_ptr + b * width + c, tl.sum(dy, axis=0), mask=cols < D_HEAD)
        sum_dn += tl.sum(dn, axis=1)
        sum_dn_n += tl.sum(dn * n, axis=1)
    mean_dn = sum_dn / width
    mean_dn_n = sum_dn_n / width

    # Pass B: through the LayerNorm into each head's output, then the attention backward.
    for h in range(H):
        off = b * s_b + h * s_h
        q, k, v, p, o = _head_attention(
            q_ptr + off, k_ptr + off, v_ptr + off, s_l, s_d, L, D_HEAD, sqrt_d, BLOCK_L, BLOCK_D, PRECISION
        )
        n, gate, _, dout, dy, dn = _gate_terms(
            o,
            mean,
            rstd,
            w_ptr,
            bias_ptr,
            x_ptr,
            dout_ptr,
            b,
            h,
            sx_b,
            sx_l,
            L,
            D_HEAD,
            width,
            BLOCK_L,
            BLOCK_D,
        )
        do = tl.where(mask, rstd[:, None] * (dn - mean_dn[:, None] - n * mean_dn_n[:, None]), 0.0)
        dv = tl.dot(tl.trans(p), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = (
            p * (dp - tl.sum(p * dp, axis=1)[:, None]) / sqrt_d
        )  # zero on padded rows (do = 0) and keys (p = 0)
        dq = tl.dot(ds, k, input_precision=PRECISION)
        dk = tl.dot(tl.trans(ds), q, input_precision=PRECISION)
        g_offs = b * L * width + rows[:, None] * width + (h * D_HEAD + cols)[None, :]
        tl.store(dq_ptr + g_offs, _round_to(dq, dq_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask)
        tl.store(dk_ptr + g_offs, _round_to(dk, dk_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask)
        tl.store(dv_ptr + g_offs, _round_to(dv, dv_ptr.dtype.element_ty, EMULATE_RTNE), mask=mask)


@triton.jit
def _gate_bwd_kernel(
    q0,
    k0,
    v0,
    x0,
    w0,
    bias0,
    mean0,
    rstd0,
    dout0,
    dq0,
    dk0,
    dv0,
    dx0,
    dw0,
    dbias0,
    B0,
    L0,
    s0_b,
    s0_l,
    s0_h,
    s0_d,
    sx0_b,
    sx0_l,
    q1,
    k1,
    v1,
    x1,
    w1,
    bias1,
    mean1,
    rstd1,
    dout1,
    dq1,
    dk1,
    dv1,
    dx1,
    dw1,
    dbias1,
    L1,
    s1_b,
    s1_l,
    s1_h,
    s1_d,
    sx1_b,
    sx1_l,
    H,
    D_HEAD,
    sqrt_d,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION0: tl.constexpr,
    PRECISION1: tl.constexpr,
    TWO_STREAMS: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):
    pid = tl.program_id(0)
    if TWO_STREAMS:
        if pid < B0:
            _bwd_stream(
                pid,
                q0,
                k0,
                v0,
                x0,
                w0,
                bias0,
                mean0,
                rstd0,
                dout0,
                dq0,
                dk0,
                dv0,
                dx0,
                dw0,
                dbias0,
                s0_b,
                s0_l,
                s0_h,
                s0_d,
                sx0_b,
                sx0_l,
                L0,
                H,
                D_HEAD,
                sqrt_d,
                BLOCK_L,
                BLOCK_D,
                PRECISION0,
                EMULATE_RTNE,
            )
        else:
            _bwd_stream(
                pid - B0,
                q1,
                k1,
                v1,
                x1,
                w1,
                bias1,
                mean1,
                rstd1,
                dout1,
                dq1,
                dk1,
                dv1,
                dx1,
                dw1,
                dbias1,
                s1_b,
                s1_l,
                s1_h,
                s1_d,
                sx1_b,
                sx1_l,
                L1,
                H,
                D_HEAD,
                sqrt_d,
                BLOCK_L,
                BLOCK_D,
                PRECISION1,
                EMULATE_RTNE,
            )
    else:
        _bwd_stream(
            pid,
            q0,
            k0,
            v0,
            x0,
            w0,
            bias0,
            mean0,
            rstd0,
            dout0,
            dq0,
            dk0,
            dv0,
            dx0,
            dw0,
            dbias0,
            s0_b,
            s0_l,
            s0_h,
            s0_d,
            sx0_b,
            sx0_l,
            L0,
            H,
            D_HEAD,
            sqrt_d,
            BLOCK_L,
            BLOCK_D,
            PRECISION0,
            EMULATE_RTNE,
        )


# ----------------------------------------------------------------------------------------------- host side


# Decided when the kernels were decorated (TRITON_INTERPRET at import), not at launch.
_INTERPRETED = not isinstance(_gate_fwd_kernel, triton.runtime.JITFunction)


class _Stream:
    """One stream's checked tensors and strides. q, k, v must share one layout (true for the unbind views of
    a [B, L, 3, H, d] projection and for contiguous tensors); otherwise they are made contiguous."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        check_inputs(q, k, v, x, weight, bias)
        if not (q.stride() == k.stride() == v.stride()):
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        if x.stride(-1) != 1:
            x = x.contiguous()
        self.q, self.k, self.v, self.x = q, k, v, x
        self.weight, self.bias, self.eps = weight.contiguous(), bias.contiguous(), float(eps)
        self.batch, self.length, self.heads, self.head_dim = q.shape

    @property
    def precision(self) -> str:
        return "ieee" if self.q.dtype == torch.float32 else "tf32"

    def strides(self) -> tuple[int, ...]:
        return (*self.q.stride(), self.x.stride(0), self.x.stride(1))


def check_inputs(q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"q, k, v must share one shape [B, L, H, d], got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    b, l, h, d = q.shape
    if x.shape != (b, l, h * d) or weight.shape != (h * d,) or bias.shape != (h * d,):
        raise ValueError(
            f"x must be [B, L, H*d] = {(b, l, h * d)} and weight, bias [{h * d}]; got "
            f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}"
        )
    if (
        not (q.dtype == k.dtype == v.dtype)
        or q.dtype not in SUPPORTED_DTYPES
        or x.dtype not in SUPPORTED_DTYPES
    ):
        raise ValueError(
            f"the attention gate kernel takes float32 or bfloat16 q, k, v (one dtype) and x; got "
            f"{q.dtype}, {k.dtype}, {v.dtype}, {x.dtype}"
        )
    if d > MAX_HEAD_DIM or l > 64:
        raise ValueError(
            f"the attention gate kernel holds L <= 64 instances and head dim <= {MAX_HEAD_DIM}; "
            f"got L={l}, d={d}"
        )
    devices = {t.device for t in (q, k, v, x, weight, bias)}
    if len(devices) != 1:
        raise ValueError(f"all attention gate inputs must be on one device, got {sorted(map(str, devices))}")


def _launch_config(streams: list[_Stream]) -> dict:
    heads, head_dim = streams[0].heads, streams[0].head_dim
    if any((s.heads, s.head_dim) != (heads, head_dim) for s in streams):
        raise ValueError(
            "both streams of one launch must share the head count and head dim, got "
            + ", ".join(f"H={s.heads} d={s.head_dim}" for s in streams)
        )
    block_d = max(16, triton.next_power_of_2(head_dim))
    return {
        "H": heads,
        "D_HEAD": head_dim,
        "sqrt_d": math.sqrt(head_dim),
        "BLOCK_L": max(16, triton.next_power_of_2(max(s.length for s in streams))),  # tl.dot needs >= 16
        "BLOCK_D": block_d,
        "PRECISION0": streams[0].precision,
        "PRECISION1": streams[-1].precision,
        "TWO_STREAMS": len(streams) == 2,
        "EMULATE_RTNE": _INTERPRETED,
        "num_warps": 8 if block_d >= 128 else 4,
    }


def _two(items: list) -> list:
    return items if len(items) == 2 else items * 2


def gate_forward(streams: list[_Stream]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """One launch over one or two streams; per stream (out, mean, rstd)."""
    results = []
    for s in streams:
        out = _empty(s.x.shape, s.x.dtype, s.x.device)
        stats = _empty((2, s.batch, s.length), torch.float32, s.x.device)
        results.append((out, stats[0], stats[1]))
    # A one-stream launch passes stream 0 again in stream 1's slots; TWO_STREAMS=False never reads them.
    args = []
    for i, (s, (out, mean, rstd)) in enumerate(_two(list(zip(streams, results)))):
        args += [s.q, s.k, s.v, s.x, s.weight, s.bias, out, mean, rstd]
        args += ([s.batch] if i == 0 else []) + [s.length, *s.strides(), s.eps]
    grid = (sum(s.batch for s in streams),)
    if grid[0]:
        _gate_fwd_kernel[grid](*args, **_launch_config(streams))
    return results


def gate_backward(
    streams: list[_Stream], saved: list[tuple[Tensor, Tensor]], grads: list[Tensor]
) -> list[tuple[Tensor, ...]]:
    """One launch over one or two streams; per stream (dq, dk, dv, dx, dweight, dbias)."""
    results, args = [], []
    for s in streams:
        shape = s.q.shape
        dq, dk, dv = (_empty(shape, s.q.dtype, s.q.device) for _ in range(3))
        dx = _empty(s.x.shape, s.x.dtype, s.x.device)
        # One row of LayerNorm affine partial sums per batch item, reduced below: deterministic, no atomics.
        partial = _empty((2, s.batch, shape[2] * shape[3]), torch.float32, s.q.device)
        results.append((dq, dk, dv, dx, partial))
    for i, (s, (mean, rstd), dout, (dq, dk, dv, dx, partial)) in enumerate(
        _two(list(zip(streams, saved, grads, results)))
    ):
        args += [
            s.q,
            s.k,
            s.v,
            s.x,
            s.weight,
            s.bias,
            mean,
            rstd,
            dout,
            dq,
            dk,
            dv,
            dx,
            partial[0],
            partial[1],
        ]
        args += ([s.batch] if i == 0 else []) + [s.length, *s.strides()]
    grid = (sum(s.batch for s in streams),)
    if grid[0]:
        _gate_bwd_kernel[grid](*args, **_launch_config(streams))
    out = []
    for s, (dq, dk, dv, dx, partial) in zip(streams, results):
        sums = partial.sum(dim=1)
        out.append((dq, dk, dv, dx, sums[0].to(s.weight.dtype), sums[1].to(s.bias.dtype)))
    return out


class AttentionGateFunction(torch.autograd.Function):
    """One stream: attention_gate(q, k, v, x, weight, bias, eps) -> [B, L, H*d]."""

    @staticmethod
    def forward(ctx, q, k, v, x, weight, bias, eps):
        stream = _Stream(q, k, v, x, weight, bias, eps)
        ((out, mean, rstd),) = gate_forward([stream])
        ctx.save_for_backward(stream.q, stream.k, stream.v, stream.x, stream.weight, stream.bias, mean, rstd)
        ctx.eps = stream.eps
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, x, weight, bias, mean, rstd = ctx.saved_tensors
        stream = _Stream(q, k, v, x, weight, bias, ctx.eps)
        ((dq, dk, dv, dx, dw, db),) = gate_backward([stream], [(mean, rstd)], [dout.contiguous()])
        return dq, dk, dv, dx, dw, db, None


class DualAttentionGateFunction(torch.autograd.Function):
    """Two independent streams in one launch each way: 12 tensors (q, k, v, x, weight, bias per stream) and
    two eps -> (out0, out1)."""

    @staticmethod
    def forward(ctx, q0, k0, v0, x0, w0, b0, q1, k1, v1, x1, w1, b1, eps0, eps1):
        streams = [_Stream(q0, k0, v0, x0, w0, b0, eps0), _Stream(q1, k1, v1, x1, w1, b1, eps1)]
        (out0, mean0, rstd0), (out1, mean1, rstd1) = gate_forward(streams)
        ctx.save_for_backward(
            *(t for s in streams for t in (s.q, s.k, s.v, s.x, s.weight, s.bias)), mean0, rstd0, mean1, rstd1
        )
        ctx.eps = (streams[0].eps, streams[1].eps)
        return out0, out1

    @staticmethod
    def backward(ctx, dout0, dout1):
        saved = ctx.saved_tensors
        streams = [_Stream(*saved[0:6], ctx.eps[0]), _Stream(*saved[6:12], ctx.eps[1])]
        stats = [(saved[12], saved[13]), (saved[14], saved[15])]
        grads = gate_backward(streams, stats, [dout0.contiguous(), dout1.contiguous()])
        return (*grads[0], *grads[1], None, None)

"""The temporal attention gate (docs/method.md): x * sigmoid(LayerNorm(MHSA(x))).

Only the per-head attention, the LayerNorm over the concatenated heads, the sigmoid and the product with x
belong to the op; the QKV projection stays a matmul in the module (rdfer.models.sequence.AttentionGate).

The fast path (rdfer.kernels.attention_gate) runs one stream's whole gate, attention through LayerNorm,
sigmoid and product, as one fused launch forward and one backward. RDFER's two streams cannot share a launch:
the detail stream's input is computed from the synopsis stream's output, and the backward runs in the reverse
order, so each stream calls the op once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rdfer.ops import dispatch
from rdfer.ops.constants import GATE_DTYPES, GATE_MAX_HEAD_DIM, GATE_MAX_INSTANCES


def attention_gate_reference(
    q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5
) -> Tensor:
    """q, k, v: [B, L, H, d]; x: [B, L, H*d]; weight, bias: [H*d] (LayerNorm affine). Returns [B, L, H*d].

    Softmax and LayerNorm run in float32 (float64 for float64 input); the result has x's dtype.
    """
    b, length, h, d = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)  # float32 at least; float64 stays float64
    scores = torch.einsum("blhd,bmhd->bhlm", q.to(acc), k.to(acc)) / math.sqrt(d)
    attn = scores.softmax(dim=-1)
    heads = torch.einsum("bhlm,bmhd->blhd", attn, v.to(acc)).reshape(b, length, h * d)
    gate = torch.sigmoid(F.layer_norm(heads, (h * d,), weight.to(acc), bias.to(acc), eps))
    return (x.to(acc) * gate).to(x.dtype)


# ------------------------------------------------------------------------------------------------ dispatch


def kernel_problem(q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> str | None:
    """Why the Triton kernel cannot take these inputs (None: it can). The twin takes anything; the kernel's
    own input check raises this text."""
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


def _context(q: Tensor) -> str:
    return f"{q.device}, {q.dtype}, q {tuple(q.shape)}"


def attention_gate(
    q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5
) -> Tensor:
    """One stream's gate: the Triton kernel where it can run (CUDA, or CPU under TRITON_INTERPRET=1, with
    shapes, dtypes and shared memory it fits; RDFER_KERNELS=reference forces the twin), else the twin."""
    inputs = (q, k, v, x, weight, bias)
    if dispatch.use_triton("attention_gate", inputs, kernel_problem, lambda: _context(q)):
        from rdfer.kernels.attention_gate import AttentionGateFunction

        return AttentionGateFunction.apply(q, k, v, x, weight, bias, eps)
    return attention_gate_reference(q, k, v, x, weight, bias, eps)

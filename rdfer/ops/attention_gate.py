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


def _kernel():
    from rdfer.kernels import attention_gate  # imports triton: only once Triton can run here

    return attention_gate


def _context(q: Tensor) -> str:
    return f"{q.device}, {q.dtype}, q {tuple(q.shape)}"


def attention_gate(
    q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5
) -> Tensor:
    """One stream's gate: the Triton kernel where it can run (CUDA, or CPU under TRITON_INTERPRET=1, with
    shapes, dtypes and shared memory it fits; RDFER_KERNELS=reference forces the twin), else the twin."""
    if dispatch.use_triton("attention_gate", (q, k, v, x, weight, bias), _kernel, lambda: _context(q)):
        return _kernel().AttentionGateFunction.apply(q, k, v, x, weight, bias, eps)
    return attention_gate_reference(q, k, v, x, weight, bias, eps)

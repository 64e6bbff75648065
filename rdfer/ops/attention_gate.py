"""The temporal attention gate (SPEC §2.3): x * sigmoid(LayerNorm(MHSA(x))).

Only the per-head attention, the LayerNorm over the concatenated heads, the sigmoid and the product with x
belong to the op; the QKV projection stays a matmul in the module (rdfer.models.sequence.AttentionGate).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

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
    b, l, h, d = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)  # float32 at least; float64 stays float64
    scores = torch.einsum("blhd,bmhd->bhlm", q.to(acc), k.to(acc)) / math.sqrt(d)
    attn = scores.softmax(dim=-1)
    heads = torch.einsum("bhlm,bmhd->blhd", attn, v.to(acc)).reshape(b, l, h * d)
    gate = torch.sigmoid(F.layer_norm(heads, (h * d,), weight.to(acc), bias.to(acc), eps))
    return (x.to(acc) * gate).to(x.dtype)


# ------------------------------------------------------------------------------------------------ dispatch

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def _kernel_fits(q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> bool:
    """Shapes and dtypes the Triton kernel takes (it raises on anything else; the twin takes anything)."""
    return (
        q.dim() == 4 and q.shape == k.shape == v.shape and q.dtype == k.dtype == v.dtype
        and q.dtype in _KERNEL_DTYPES and x.dtype in _KERNEL_DTYPES
        and weight.is_floating_point() and bias.is_floating_point()
        and q.shape[1] <= 64 and q.shape[3] <= 256
    )


def _use_kernel(tensors: tuple[Tensor, ...]) -> bool:
    wanted = dispatch.mode()
    if wanted == "reference":
        return False
    if dispatch.triton_usable(tensors[0].device) and _kernel_fits(*tensors):
        return True
    if wanted == "fast":
        raise RuntimeError(
            "RDFER_KERNELS=fast but the attention gate kernel cannot run here: it needs Triton and a CUDA "
            "device (or TRITON_INTERPRET=1 on CPU), q/k/v of one dtype in float32/bfloat16, L <= 64 and "
            f"head dim <= 256; got {tensors[0].device}, {tensors[0].dtype}, shape {tuple(tensors[0].shape)}")
    return False


def attention_gate(q: Tensor, k: Tensor, v: Tensor, x: Tensor, weight: Tensor, bias: Tensor,
                   eps: float = 1e-5) -> Tensor:
    """One stream's gate (what RDFER calls, once per stream): the Triton kernel where it can run (CUDA, or
    CPU under TRITON_INTERPRET=1; RDFER_KERNELS=reference forces the twin), else the twin."""
    if _use_kernel((q, k, v, x, weight, bias)):
        from rdfer.kernels.attention_gate import AttentionGateFunction

        return AttentionGateFunction.apply(q, k, v, x, weight, bias, eps)
    return attention_gate_reference(q, k, v, x, weight, bias, eps)


def dual_attention_gate(syn: Sequence, det: Sequence) -> tuple[Tensor, Tensor]:
    """Two independent streams' gates, each given as (q, k, v, x, weight, bias[, eps]), in one kernel launch
    forward and one backward. RDFER itself cannot use this (its detail stream's input depends on the
    synopsis stream's output), but callers with two independent streams can. Falls back to two calls."""
    syn_args, det_args = _with_eps(syn), _with_eps(det)
    tensors = (*syn_args[:6], *det_args[:6])
    same_layout = syn_args[0].dim() == det_args[0].dim() == 4 and syn_args[0].shape[2:] == det_args[0].shape[2:]
    if (same_layout and len({t.device for t in tensors}) == 1
            and _use_kernel(syn_args[:6]) and _use_kernel(det_args[:6])):
        from rdfer.kernels.attention_gate import DualAttentionGateFunction

        return DualAttentionGateFunction.apply(*syn_args[:6], *det_args[:6], syn_args[6], det_args[6])
    return attention_gate(*syn_args), attention_gate(*det_args)


def _with_eps(args: Sequence) -> tuple:
    if len(args) not in (6, 7):
        raise ValueError(f"a stream is (q, k, v, x, weight, bias[, eps]), got {len(args)} items")
    return (*args, 1e-5) if len(args) == 6 else tuple(args)

"""The numbers the ops and their Triton kernels share, each defined once.

This module never imports triton: rdfer.ops reads it for its dispatch rules and twins, and rdfer.kernels
passes the same values to the kernels as tl.constexpr.
"""

from __future__ import annotations

from enum import IntEnum

import torch


class Category(IntEnum):
    """A training sample's agreement category (docs/method.md): the codes stored in tensors and memories."""

    EASY = 0
    HARD = 1
    NOISY = 2


CATEGORY_NAMES: tuple[str, ...] = tuple(c.name.lower() for c in Category)  # indexed by the code

# The cross-clip agreement kernel: one program holds AGREEMENT_BLOCK_B samples, each as a [K, C] tile.
AGREEMENT_MAX_CLIPS = 8
AGREEMENT_MAX_CLASSES = 16
AGREEMENT_BLOCK_B = 128
AGREEMENT_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # others are cast to float32 first

# The attention gate kernel: one program holds all heads of all instances of one batch item.
GATE_MAX_INSTANCES = 64
GATE_MAX_HEAD_DIM = 256
GATE_DTYPES = (torch.float32, torch.bfloat16)  # of q, k, v (one dtype) and, separately, of x

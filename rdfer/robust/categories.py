"""The sample categories (docs/method.md §3): what training concludes about a training clip.

easy: the network agrees with the label; hard: its views disagree, the clip is worth more attention; noisy:
they agree with each other but not with the label. The codes are stored in tensors, memories and checkpoints.
This module imports nothing from rdfer, so every room may name a category: the robust methods, the agreement
op and its Triton kernel, the run log, prediction and the review.
"""

from __future__ import annotations

from enum import IntEnum


class Category(IntEnum):
    EASY = 0
    HARD = 1
    NOISY = 2


EASY, HARD, NOISY = Category.EASY, Category.HARD, Category.NOISY
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name.lower() for c in Category)  # indexed by the code

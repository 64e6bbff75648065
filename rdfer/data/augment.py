"""Clip-consistent training augmentation (docs/method.md §1): one parameter set per clip, applied to all its
frames. `sample_augment` draws the parameters from a clip's random stream; what they do to the pixels and
their tensor encoding live with the op that applies them (rdfer.ops.augment).
"""

from __future__ import annotations

import math

import numpy as np

from rdfer.data.sampling import clip_rng
from rdfer.ops.augment import AugmentParams


def sample_crop(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (y0, x0, h, w): area share in `scale`, aspect w/h log-uniform in `ratio`.

    Up to 10 tries; if none fits, the centre crop of the whole frame clamped to `ratio` (torchvision's rule).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return y0, x0, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def sample_augment(
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: float = 0.4,
) -> AugmentParams:
    """Draw one clip's parameters, always in this order: crop, flip (p=0.5), brightness, contrast, saturation.

    Each colour factor is uniform in [max(0, 1 - jitter), 1 + jitter].
    """
    y0, x0, h, w = sample_crop(rng, size, size, scale, ratio)
    flip = bool(rng.random() < 0.5)
    lo, hi = max(0.0, 1.0 - jitter), 1.0 + jitter
    brightness, contrast, saturation = (float(rng.uniform(lo, hi)) for _ in range(3))
    return AugmentParams(y0, x0, h, w, flip, brightness, contrast, saturation)


def clip_augment_params(seed: int, epoch: int, sample_id: int, size: int, **kwargs) -> AugmentParams:
    """The parameters of clip `sample_id` in `epoch`: the one entry point both loaders use."""
    return sample_augment(clip_rng(seed, epoch, sample_id), size, **kwargs)


# The columns of params_to_tensor's [B, 8] rows, in order.

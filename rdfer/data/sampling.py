"""Frame sampling (docs/method.md §1) and the seeded random streams every loader shares.

Every random choice of the input pipeline is a pure function of (seed, epoch, sample_id) or (seed, epoch), so
that the CPU loader and the DALI pipeline pick the same frames, crops and clip order, whatever the number of
worker processes or the order in which samples are fetched.
"""

from __future__ import annotations

import numpy as np

# Distinct SeedSequence spawn keys keep the per-clip stream and the epoch-order stream apart: numpy pads short
# entropy with zeros, so default_rng([seed, epoch]) would otherwise equal default_rng([seed, epoch, 0]).
_CLIP_STREAM = 1
_ORDER_STREAM = 2


def uniform_indices(num_frames: int, T: int = 64) -> np.ndarray:
    """T frame indices spread uniformly over a clip of `num_frames`: index floor(i*N/T), i = 0..T-1.

    Clips shorter than T repeat frames (never fail on a short clip); longer ones skip frames evenly.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if T <= 0:
        raise ValueError(f"T must be positive, got {T}")
    # Integer arithmetic: exact for any N, no float rounding at segment boundaries.
    return (np.arange(T, dtype=np.int64) * int(num_frames)) // int(T)


def _check_seed_parts(**parts: int) -> None:
    for name, value in parts.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def clip_rng(seed: int, epoch: int, sample_id: int) -> np.random.Generator:
    """The random stream of one clip in one epoch: everything random about that clip is drawn from it."""
    _check_seed_parts(seed=seed, epoch=epoch, sample_id=sample_id)
    seq = np.random.SeedSequence([int(seed), int(epoch), int(sample_id)], spawn_key=(_CLIP_STREAM,))
    return np.random.default_rng(seq)


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """An epoch's training order: a permutation of 0..num_samples-1 (int64), a pure function of its args."""
    _check_seed_parts(seed=seed, epoch=epoch, num_samples=num_samples)
    seq = np.random.SeedSequence([int(seed), int(epoch)], spawn_key=(_ORDER_STREAM,))
    return np.random.default_rng(seq).permutation(int(num_samples)).astype(np.int64, copy=False)

"""Frame sampling (SPEC §1, §2.2) and the seeded random streams every loader shares.

Every random choice of the input pipeline is a pure function of (seed, epoch, sample_id) or (seed, epoch), so
that the CPU loader and the DALI pipeline pick the same frames, crops and clip order, whatever the number of
worker processes or the order in which samples are fetched.
"""
from __future__ import annotations

import numpy as np
import torch

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


def synopsis_indices(
    batch: int,
    T: int = 64,
    L: int = 16,
    train: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices [batch, L] (int64) of the synopsis stream's L frames among the T loaded ones.

    The T frames are cut into L segments of T/L frames. Training takes a random frame inside each segment
    (offset drawn with `generator`, independently per video and segment); evaluation takes the segment centres
    floor((i + 0.5) * T / L), the same for every video.
    """
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    if L <= 0 or T <= 0 or T % L != 0:
        raise ValueError(f"synopsis sampling needs T divisible by L (T={T}, L={L})")
    seg = T // L
    starts = torch.arange(L, dtype=torch.int64, device=device) * seg
    if not train:
        # seg is an integer, so floor((i + 0.5) * seg) == i * seg + seg // 2.
        return (starts + seg // 2).expand(batch, L).contiguous()
    # Draw on the generator's own device (a CUDA generator cannot fill a CPU tensor), then move.
    draw_device = generator.device if generator is not None else device
    offsets = torch.randint(0, seg, (batch, L), generator=generator, device=draw_device, dtype=torch.int64)
    return starts + offsets.to(starts.device)


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

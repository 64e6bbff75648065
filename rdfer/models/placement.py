"""Where the detail stream's clips go when not at the key positions (model.detail_clips, docs/method.md §2):
the baselines of the architecture experiment (rdfer.experiments.architecture). Centres are on the T-frame
timeline, in time order, float32 [B, K], like the key positions they replace."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def uniform_centers(batch: int, k: int, num_frames: int, device=None) -> Tensor:
    """K evenly spaced centres, each the middle of one of K equal segments: (i + 0.5) * T / K - 0.5, the
    key positions' formula with K segments."""
    i = torch.arange(k, dtype=torch.float32, device=device)
    return ((i + 0.5) * (num_frames / k) - 0.5).expand(batch, k).contiguous()


def random_centers(
    batch: int,
    k: int,
    num_frames: int,
    train: bool,
    sample_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """K centres uniform on [0, T - 1], sorted. Training: a fresh draw per step (from `generator`, else the
    default one). Test: a fixed draw per clip, from its sample id (a seeded stream per id), so that every
    evaluation of a clip sees the same positions; without ids, one fixed stream per call."""
    if train:
        draw_device = generator.device if generator is not None else device
        u = torch.rand((batch, k), generator=generator, device=draw_device).to(device)
    elif sample_ids is not None:
        ids = sample_ids.detach().cpu().tolist()
        u = torch.tensor(np.stack([np.random.default_rng([7, i]).random(k) for i in ids]).reshape(batch, k))
    else:
        u = torch.rand((batch, k), generator=torch.Generator().manual_seed(0))
    return (u.to(device=device, dtype=torch.float32) * (num_frames - 1)).sort(dim=1).values


def top_class_centers(probs: Tensor, k: int, num_frames: int) -> Tensor:
    """All K clips on the class that peaks highest (the first key class): its K most probable synopsis
    instances, mapped to the timeline as the key positions are ((i + 0.5) * T / Ls - 0.5), in time order.
    The key positions put one clip on each of K classes, so at most one lands on the target expression."""
    b, ls, _ = probs.shape
    if not 1 <= k <= ls:
        raise ValueError(f"top-class clips need K ({k}) <= synopsis instances ({ls})")
    top = probs.max(dim=1).values.argmax(dim=1)  # [B]; ties: the lower class, as key_positions
    curve = probs.gather(2, top.view(b, 1, 1).expand(b, ls, 1)).squeeze(2)  # [B, Ls]
    instances = curve.topk(k, dim=1).indices.sort(dim=1).values.float()
    return (instances + 0.5) * (num_frames / ls) - 0.5


def centers(
    how: str,
    batch: int,
    k: int,
    num_frames: int,
    train: bool,
    sample_ids: Tensor | None,
    generator: torch.Generator | None,
    device,
) -> Tensor:
    if how == "uniform":
        return uniform_centers(batch, k, num_frames, device)
    if how == "random":
        return random_centers(batch, k, num_frames, train, sample_ids, generator, device)
    raise ValueError(f"no clip placement {how!r} here (key positions are the network's own)")

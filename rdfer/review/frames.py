"""The suspects' frames as training saw them, and where the network looked in them.

Frames come from the frame cache (rdfer.data.cache) when it holds the clips, read only: the run that filled
it already decoded them. Only the clips it lacks are decoded, with the CPU loader's decoder. The network of
last.pt then picks, in eval mode, the synopsis frames and the key-expression clips of each suspect
(`synopsis_indices`, `clip_indices` of its forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rdfer.data.cache import StoreKey, held_rows, split_root
from rdfer.data.records import Split
from rdfer.models.rdfer_net import RDFER
from rdfer.progress import progress_bar

DECODERS = ("pil", "dali-cpu", "dali-gpu")  # the frame cache's stores, as rdfer.data.cached_loader names them


@dataclass
class Looked:
    frames: np.ndarray  # uint8 [n, T, 3, S, S]
    synopsis: np.ndarray  # int64 [n, Ls] frame indices of the synopsis stream
    clips: np.ndarray  # int64 [n, K, L] frame indices of the key-expression clips
    from_cache: int  # how many of the n clips the frame cache held


def cached_frames(
    split: Split, positions: Sequence[int], num_frames: int, size: int
) -> tuple[np.ndarray, list]:
    """uint8 [n, T, 3, S, S] of the split's clips at `positions` from the frame cache, and the positions it
    does not hold (their rows are left zero)."""
    out = np.zeros((len(positions), num_frames, 3, size, size), dtype=np.uint8)
    missing = list(range(len(positions)))
    if not len(split):
        return out, missing
    root = str(split_root(split))
    for decoder in DECODERS:
        view = held_rows(split, StoreKey(split.dataset, root, num_frames, size, decoder))
        if view is None or not view.committed:
            continue
        store, still = view.memmap(), []
        for k in missing:
            row = view.rows[positions[k]]
            if 0 <= row < view.committed:
                out[k] = store[row]
            else:
                still.append(k)
        missing = still
    return out, missing


def decode_missing(split: Split, positions: Sequence[int], out: np.ndarray, missing: list, progress: bool):
    """Decode the clips the cache lacks into `out` (as the CPU loader does); a bad clip stays black."""
    from rdfer.data.loader import decode_clips

    if not missing:
        return
    num_frames, size = out.shape[1], out.shape[-1]
    paths = [split.records[positions[k]].path for k in missing]
    decoded = decode_clips(paths, num_frames, size, workers=0)
    bar = progress_bar(
        decoded, total=len(paths), desc="review: decoding clips not in the cache", enabled=progress
    )
    for k, clip in zip(missing, bar, strict=True):
        if not isinstance(clip, str):
            out[k] = clip.numpy() if torch.is_tensor(clip) else clip


@torch.no_grad()
def where_it_looked(model: RDFER, frames: np.ndarray, batch: int = 32, progress: bool = False):
    """Synopsis indices [n, Ls] and key clip indices [n, K, L] of the network in eval mode."""
    model.eval()
    syn, clips = [], []
    starts = range(0, len(frames), batch)
    for s in progress_bar(starts, desc="review: key clips", enabled=progress, leave=False):
        out = model(torch.from_numpy(frames[s : s + batch]))
        syn.append(out["synopsis_indices"].cpu())
        clips.append(out["clip_indices"].cpu())
    if not syn:
        k, length = model.clips, model.config.model.clip_length
        return np.zeros((0, model.config.model.synopsis_frames), np.int64), np.zeros((0, k, length), np.int64)
    return torch.cat(syn).numpy(), torch.cat(clips).numpy()


def look(model: RDFER, split: Split, positions: Sequence[int], progress: bool = False) -> Looked:
    data = model.config.data
    frames, missing = cached_frames(split, positions, data.num_frames, data.image_size)
    held = len(positions) - len(missing)
    decode_missing(split, positions, frames, missing, progress)
    synopsis, clips = where_it_looked(model, frames, progress=progress)
    return Looked(frames, synopsis, clips, held)

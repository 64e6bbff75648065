"""Where clips land, against SynthDFER's ground truth (rdfer.experiments.architecture).

The loader shows loaded frame i (of T) = source frame floor(i * N / T) of an N-frame clip
(rdfer.data.sampling.uniform_indices); ground_truth.csv numbers source frames from 1. A clip centre p on the
T-frame timeline is the loaded frame floor(p + 0.5) (the ops' rounding), so it is *inside* a window
[start, end] when that loaded frame shows a source frame of the window. A window's chance level is its share
of the clip's frames: what a centre placed uniformly at random would hit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rdfer.data.sampling import uniform_indices
from rdfer.data.synth import ClipTruth


def source_frame(p: float, n: int, t: int) -> int:
    """The 1-based source frame that a centre p on the T-frame timeline of an n-frame clip shows."""
    i = min(max(int(np.floor(p + 0.5)), 0), t - 1)
    return int(uniform_indices(n, t)[i]) + 1


def inside(p: float, start: int | None, end: int | None, n: int, t: int) -> bool:
    return start is not None and end is not None and start <= source_frame(p, n, t) <= end


def loaded_span(start: int, end: int, n: int, t: int) -> tuple[int, int]:
    """The first and last loaded frames that show the window [start, end]; when the sampling skips the whole
    window (n > T), the loaded frame nearest to its middle."""
    shown = uniform_indices(n, t) + 1
    hit = np.flatnonzero((shown >= start) & (shown <= end))
    if hit.size:
        return int(hit[0]), int(hit[-1])
    nearest = int(np.argmin(np.abs(shown - 0.5 * (start + end))))
    return nearest, nearest


def apex_centers(lo: float, hi: float, k: int) -> np.ndarray:
    """K centres evenly spread over the loaded frames lo..hi: each rounds to a frame inside the span."""
    return lo - 0.5 + (np.arange(k) + 0.5) * (hi - lo + 1) / k


class ApexPlacer:
    """The apex-clips oracle (model.clip_placer): every detail clip centred on the true apex of its clip, in
    training and at test; a clip without a target expression (neutral) gets evenly spaced clips."""

    def __init__(self, train: list[ClipTruth], test: list[ClipTruth], k: int, t: int):
        self.k, self.t = k, t
        self.centers = {True: self._table(train), False: self._table(test)}

    def _table(self, rows: list[ClipTruth]) -> Tensor:
        uniform = (np.arange(self.k) + 0.5) * self.t / self.k - 0.5
        out = np.empty((len(rows), self.k), dtype=np.float32)
        for i, r in enumerate(rows):
            if r.apex_start > 0:
                out[i] = apex_centers(*loaded_span(r.apex_start, r.apex_end, r.num_frames, self.t), self.k)
            else:
                out[i] = uniform
        return torch.from_numpy(out)

    def __call__(self, sample_ids: Tensor | None, training: bool, t: int) -> Tensor:
        if sample_ids is None or t != self.t:
            raise ValueError("apex-clips needs the batch's sample ids and the experiment's data.num_frames")
        return self.centers[bool(training)][sample_ids.cpu()]


def grid_hits(rows: list[ClipTruth], positions: int, t: int) -> float | None:
    """Share of the clips whose apex window holds some key-position candidate: the ceiling of any
    re-sampling that centres clips on synopsis instances ((i + 0.5) * T / positions - 0.5)."""
    grid = (np.arange(positions) + 0.5) * t / positions - 0.5
    hits = [any(inside(p, r.apex_start, r.apex_end, r.num_frames, t) for p in grid) for r in rows]
    return float(np.mean(hits)) if hits else None


def any_clip_chance(rows: list[ClipTruth], k: int) -> dict[str, float | None]:
    """The chance that some of K clips placed uniformly at random lands in the window, 1 - (1 - w)^K, on
    the short_apex clips' apex and the distractor clips' distractor: the level of a 'some clip' hit."""

    def level(reason: str, start: str, end: str) -> float | None:
        shares = [
            (getattr(r, end) - getattr(r, start) + 1) / r.num_frames
            for r in rows
            if r.hard_reason == reason and getattr(r, start)
        ]
        return float(np.mean([1 - (1 - w) ** k for w in shares])) if shares else None

    return {
        "apex": level("short_apex", "apex_start", "apex_end"),
        "distractor": level("distractor", "distractor_start", "distractor_end"),
    }


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def hit_rates(
    rows: list[ClipTruth], centers: np.ndarray, classes: np.ndarray | None, t: int
) -> tuple[dict, dict]:
    """(the report's hit_rate, details) over the test clips `rows` with their clip centres [N, K].

    apex: on short_apex clips, the true class's key clip centred in the apex window when `classes` [N, K]
    (each centre's class) is given, else some clip centred in it. distractor: on distractor clips, some clip
    centred in the distractor window."""
    short = [i for i, r in enumerate(rows) if r.hard_reason == "short_apex"]
    distr = [i for i, r in enumerate(rows) if r.hard_reason == "distractor" and r.distractor_start]

    def on_apex(i: int, any_clip: bool) -> bool:
        r = rows[i]
        if any_clip or classes is None:
            return any(inside(p, r.apex_start, r.apex_end, r.num_frames, t) for p in centers[i])
        mine = np.flatnonzero(classes[i] == r.true_index)
        return bool(mine.size) and inside(centers[i][mine[0]], r.apex_start, r.apex_end, r.num_frames, t)

    def window(r: ClipTruth, start: int | None, end: int | None) -> float:
        return (end - start + 1) / r.num_frames

    on_distractor = [
        any(
            inside(p, rows[i].distractor_start, rows[i].distractor_end, rows[i].num_frames, t)
            for p in centers[i]
        )
        for i in distr
    ]
    rate = {
        "apex": _share([on_apex(i, False) for i in short]),
        "apex_chance": _share([window(rows[i], rows[i].apex_start, rows[i].apex_end) for i in short]),
        "distractor": _share(on_distractor),
        "distractor_chance": _share(
            [window(rows[i], rows[i].distractor_start, rows[i].distractor_end) for i in distr]
        ),
    }
    targeted = [i for i in distr if rows[i].apex_start > 0]
    details = {
        "apex_any_clip": _share([on_apex(i, True) for i in short]),
        "apex_true_class_in_keys": None
        if classes is None
        else _share([bool((classes[i] == rows[i].true_index).any()) for i in short]),
        "distractor_clips_apex": _share([on_apex(i, False) for i in targeted]),
        "short_apex_clips": len(short),
        "distractor_clips": len(distr),
    }
    return rate, details

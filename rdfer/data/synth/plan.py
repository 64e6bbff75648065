"""The ground truth of every clip, decided before any pixel is drawn: id, identity, frame count, label noise,
hard-sample reason, and the time course of the target expression and of any distractor expression.

Split-level choices (clip order, which clips are hard, which are noisy) use generators keyed by the seed and a
purpose tag; each clip's own choices use `default_rng([seed, PLAN_TAG, clip_id])`, so a clip never depends on
another clip, on the worker count or on the order of work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rdfer.data.synth.config import ClipSpec, SynthConfig
from rdfer.data.synth.expressions import CLASSES, NEUTRAL, Envelope, envelope_at, place, short_segment
from rdfer.data.synth.noise import flip_labels

HARD_REASONS: tuple[str, ...] = ("intensity", "short_apex", "distractor")
PLAN_TAG, ORDER_TAG, HARD_TAG, IDENTITY_TAG = 5, 7, 101, 3


@dataclass(frozen=True)
class ClipPlan:
    clip_id: int  # DFEW-style video_name, from 1; train ids come first
    split: str
    true_class: int  # 0..6
    given_class: int  # 0..6; differs from true_class only for noisy training clips
    num_frames: int
    identity: int  # index into the identity pool (train and test pools are disjoint)
    hard_reason: str  # "" or one of HARD_REASONS
    target: Envelope | None  # None for neutral clips: there is no expression to show
    distractor_class: int | None
    distractor: Envelope | None

    @property
    def is_noisy(self) -> bool:
        return self.given_class != self.true_class

    @property
    def is_hard(self) -> bool:
        return self.hard_reason != ""


def plan_clips(
    config: SynthConfig, specs: list[ClipSpec], seed: int, noise: float, noise_kind: str
) -> list[ClipPlan]:
    plans: list[ClipPlan] = []
    for split_index, split in enumerate(("train", "test")):
        mine = [s for s in specs if s.split == split]
        # DFEW's split files are not sorted by class; neither are ours.
        order = np.random.default_rng([seed, ORDER_TAG, split_index]).permutation(len(mine))
        mine = [mine[i] for i in order]
        true = np.array([s.true_class for s in mine], dtype=np.int64)
        reasons = _hard_reasons(true, config.hard_share, seed, split_index)
        # Noise touches the training split only: the test split is the clean reference.
        given = flip_labels(true, noise, noise_kind, seed) if split == "train" else true
        pool_start = 0 if split == "train" else config.train_identities
        pool_size = config.train_identities if split == "train" else config.test_identities
        for spec, reason, given_class in zip(mine, reasons, given, strict=False):
            clip_id = len(plans) + 1
            plans.append(
                _plan_clip(config, spec, clip_id, int(given_class), reason, seed, pool_start, pool_size)
            )
    return plans


def _hard_reasons(true: np.ndarray, share: float, seed: int, split_index: int) -> list[str]:
    """round(share * n_c) hard clips per class c; reasons rotate over HARD_REASONS in a shuffled order.

    Neutral clips show no expression to weaken or shorten, so a hard neutral clip is always a distractor one.
    """
    reasons = [""] * len(true)
    for c in range(len(CLASSES)):
        members = np.flatnonzero(true == c)
        rng = np.random.default_rng([seed, HARD_TAG, split_index, c])
        chosen = rng.permutation(members)[: round(share * len(members))]
        offset = int(rng.integers(len(HARD_REASONS)))
        for k, i in enumerate(sorted(chosen)):
            reasons[i] = "distractor" if c == NEUTRAL else HARD_REASONS[(offset + k) % len(HARD_REASONS)]
    return reasons


def _plan_clip(
    config: SynthConfig,
    spec: ClipSpec,
    clip_id: int,
    given_class: int,
    reason: str,
    seed: int,
    pool_start: int,
    pool_size: int,
) -> ClipPlan:
    rng = np.random.default_rng([seed, PLAN_TAG, clip_id])
    lo, hi = config.frames
    n = spec.num_frames if spec.num_frames is not None else int(rng.integers(lo, hi + 1))
    identity = pool_start + int(rng.integers(pool_size))
    c = spec.true_class
    target = distractor = None
    if c != NEUTRAL:
        if reason == "short_apex":
            target = _short_apex(rng, n, _uniform(rng, config.normal_intensity))
        elif reason == "distractor":
            target, distractor = _with_strong_distractor(rng, n, config)
        else:
            level = config.hard_intensity if reason == "intensity" else config.normal_intensity
            target = _normal(rng, n, _uniform(rng, level))
    elif reason == "distractor":
        length = max(2, round(rng.uniform(0.25, 0.4) * n))
        distractor = short_segment(
            length, _uniform(rng, config.strong_distractor_intensity), place(rng, n, [length])[0]
        )
    if distractor is None and not reason and rng.random() < config.weak_distractor_prob:
        distractor = _weak_distractor(rng, n, target, config)
    distractor_class = None
    if distractor is not None:
        others = [k for k in range(len(CLASSES)) if k not in (c, NEUTRAL)]
        distractor_class = others[int(rng.integers(len(others)))]
    return ClipPlan(
        clip_id, spec.split, c, given_class, n, identity, reason, target, distractor_class, distractor
    )


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _normal(rng: np.random.Generator, n: int, intensity: float) -> Envelope:
    apex = max(2, round(rng.uniform(0.3, 0.55) * n))
    rise = max(1, round(rng.uniform(0.08, 0.2) * n))
    decay = max(1, round(rng.uniform(0.08, 0.2) * n))
    while rise + apex + decay > n:  # very short clips: trim the ramps first
        if rise > 1 or decay > 1:
            rise, decay = max(1, rise - 1), max(1, decay - 1)
        else:
            apex -= 1
    return envelope_at(place(rng, n, [rise + apex + decay])[0], rise, apex, decay, intensity)


def _short_apex(rng: np.random.Generator, n: int, intensity: float) -> Envelope:
    """Full intensity for 1-3 frames with 1-2-frame ramps: easy to miss when frames are sub-sampled."""
    apex, rise, decay = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
    return envelope_at(place(rng, n, [rise + apex + decay])[0], rise, apex, decay, intensity)


def _with_strong_distractor(
    rng: np.random.Generator, n: int, config: SynthConfig
) -> tuple[Envelope, Envelope]:
    """Target apex over 30-42% of the clip; another expression, as strong, over 20-30% (always shorter than
    the target's apex), before or after it."""
    apex = max(3, round(rng.uniform(0.3, 0.42) * n))
    rise = max(1, round(rng.uniform(0.05, 0.12) * n))
    decay = max(1, round(rng.uniform(0.05, 0.12) * n))
    length = min(apex - 1, max(2, round(rng.uniform(0.2, 0.3) * n)))
    while rise + apex + decay + length > n:  # very short clips
        if rise > 1 or decay > 1:
            rise, decay = max(1, rise - 1), max(1, decay - 1)
        else:
            apex -= 1
            length = min(length, apex - 1)
    target_level = _uniform(rng, config.normal_intensity)
    distractor_level = _uniform(rng, config.strong_distractor_intensity)
    first = bool(rng.random() < 0.5)
    span = rise + apex + decay
    starts = place(rng, n, [length, span] if first else [span, length])
    d_start, t_start = (starts[0], starts[1]) if first else (starts[1], starts[0])
    return envelope_at(t_start, rise, apex, decay, target_level), short_segment(
        length, distractor_level, d_start
    )


def _weak_distractor(
    rng: np.random.Generator, n: int, target: Envelope | None, config: SynthConfig
) -> Envelope | None:
    """2-4 frames of another expression at low intensity, where the target is neutral (if there is room)."""
    length = int(rng.integers(2, 5))
    free = [(1, n)] if target is None else [(1, target.onset - 1), (target.offset + 1, n)]
    free = [(a, b) for a, b in free if b - a + 1 >= length]
    if not free:
        return None
    a, b = free[int(rng.integers(len(free)))]
    start = a + int(rng.integers(0, b - a - length + 2))
    return short_segment(length, _uniform(rng, config.weak_distractor_intensity), start)

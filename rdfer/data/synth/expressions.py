"""The 7 SynthDFER expressions as action-unit-like parameters, and their time course within a clip.

Every class is a different combination of facial actions (named after FACS action units), so the classes
differ in where the face changes, not only in how much: a tiny CNN can tell them apart at 64x64.
A clip's expression follows an `Envelope`: neutral -> onset (rise) -> apex (full intensity) -> offset (decay).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# DFEW's class order: label 1..7 in the split CSVs is index 0..6 here.
CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
NEUTRAL = CLASSES.index("neutral")

AU_NAMES: tuple[str, ...] = (
    "brow_raise",  # AU1+2: whole brow up
    "brow_inner_raise",  # AU1: inner ends up (sad, fear)
    "brow_lower",  # AU4: brows down
    "brow_together",  # AU4: inner ends drawn to the centre
    "eye_widen",  # AU5: upper lid up
    "eye_narrow",  # AU7: lids tightened
    "cheek_raise",  # AU6: cheeks up, lower lid pushed up
    "nose_wrinkle",  # AU9
    "upper_lip_raise",  # AU10 (asymmetric, a snarl)
    "lip_corner_pull",  # AU12: smile
    "lip_corner_depress",  # AU15
    "lip_stretch",  # AU20: lips pulled sideways
    "lip_press",  # AU24: thin lips
    "jaw_drop",  # AU26/27: mouth open
)
AU = {name: i for i, name in enumerate(AU_NAMES)}

_CLASS_ACTIONS: dict[str, dict[str, float]] = {
    "happy": {"lip_corner_pull": 1.0, "cheek_raise": 0.9, "eye_narrow": 0.5, "jaw_drop": 0.15},
    "sad": {"brow_inner_raise": 1.0, "brow_together": 0.35, "lip_corner_depress": 1.0, "eye_narrow": 0.35},
    "neutral": {},
    "angry": {"brow_lower": 1.0, "brow_together": 1.0, "lip_press": 1.0, "eye_narrow": 0.25},
    "surprise": {"brow_raise": 1.0, "eye_widen": 1.0, "jaw_drop": 1.0},
    "disgust": {
        "nose_wrinkle": 1.0,
        "upper_lip_raise": 1.0,
        "brow_lower": 0.5,
        "eye_narrow": 0.45,
        "lip_corner_depress": 0.35,
    },
    "fear": {
        "brow_raise": 0.7,
        "brow_inner_raise": 0.7,
        "brow_together": 0.7,
        "eye_widen": 1.0,
        "lip_stretch": 1.0,
        "jaw_drop": 0.3,
    },
}


def _class_table() -> np.ndarray:
    table = np.zeros((len(CLASSES), len(AU_NAMES)), dtype=np.float64)
    for c, name in enumerate(CLASSES):
        for au, value in _CLASS_ACTIONS[name].items():
            table[c, AU[au]] = value
    return table


CLASS_AUS: np.ndarray = _class_table()  # [7, n_au], the apex of each expression at intensity 1


def class_actions() -> dict[str, dict[str, float]]:
    """The AU recipe of each class (for synth.json, so reports can state it)."""
    return {name: dict(actions) for name, actions in _CLASS_ACTIONS.items()}


@dataclass(frozen=True)
class Envelope:
    """Time course of one expression, in 1-based frame numbers.

    Frames onset..apex_start-1 rise, apex_start..apex_end sit at `intensity`, apex_end+1..offset decay;
    frames before onset and after offset are neutral. 1 <= onset <= apex_start <= apex_end <= offset <= N.
    """

    onset: int
    apex_start: int
    apex_end: int
    offset: int
    intensity: float

    def curve(self, num_frames: int) -> np.ndarray:
        t = np.arange(1, num_frames + 1, dtype=np.float64)
        level = np.zeros(num_frames)
        rise = (t >= self.onset) & (t < self.apex_start)
        level[rise] = _smoothstep((t[rise] - self.onset + 1) / (self.apex_start - self.onset + 1))
        level[(t >= self.apex_start) & (t <= self.apex_end)] = 1.0
        decay = (t > self.apex_end) & (t <= self.offset)
        level[decay] = _smoothstep((self.offset - t[decay] + 1) / (self.offset - self.apex_end + 1))
        return level * self.intensity


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def envelope_at(start: int, rise: int, apex: int, decay: int, intensity: float) -> Envelope:
    """An envelope whose rise starts at frame `start` and that spans rise + apex + decay frames."""
    apex_start = start + rise
    apex_end = apex_start + apex - 1
    return Envelope(start, apex_start, apex_end, apex_end + decay, float(intensity))


def place(rng: np.random.Generator, num_frames: int, lengths: list[int]) -> list[int]:
    """Start frames of consecutive segments of the given lengths, with random gaps, inside 1..num_frames."""
    slack = num_frames - sum(lengths)
    if slack < 0:
        raise ValueError(f"segments of {lengths} frames do not fit in {num_frames} frames")
    # Random gaps before, between and after the segments that sum to the slack.
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    gaps = np.diff(np.concatenate([[0], cuts]))
    starts, pos = [], 1
    for gap, length in zip(gaps, lengths, strict=False):
        pos += int(gap)
        starts.append(pos)
        pos += length
    return starts


def short_segment(length: int, intensity: float, start: int) -> Envelope:
    """A segment of `length` frames with at most 2-frame ramps (distractors)."""
    ramp = max(0, min(2, (length - 1) // 3))
    return envelope_at(start, ramp, length - 2 * ramp, ramp, intensity)

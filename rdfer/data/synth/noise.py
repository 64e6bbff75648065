"""Label-noise models of SynthDFER: which training clips get a wrong label, and which wrong label.

The number of noisy clips is exact, round(rate * N), spread over the classes in proportion to their size
(largest remainder), so a test can check the realised count and a report can state it.

- `symmetric`: the given label is drawn uniformly from the 6 other classes.
- `pairs`: the given label is the true class's partner in PAIR_FLIPS, the confusions people make on DFEW:
  happy -> surprise, sad <-> neutral, angry <-> disgust, surprise -> fear, fear -> surprise.
  (Like the field's "asymmetric" noise it is a mapping, not a permutation: surprise receives flips from both
  happy and fear, and no class flips to happy.)
"""

from __future__ import annotations

import numpy as np

from rdfer.data.synth.expressions import CLASSES

NOISE_KINDS: tuple[str, ...] = ("symmetric", "pairs")

_PAIR_NAMES = {
    "happy": "surprise",
    "sad": "neutral",
    "neutral": "sad",
    "angry": "disgust",
    "surprise": "fear",
    "disgust": "angry",
    "fear": "surprise",
}
PAIR_FLIPS: dict[int, int] = {CLASSES.index(a): CLASSES.index(b) for a, b in _PAIR_NAMES.items()}


def check_noise(rate: float, kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}; got {kind!r}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1]; got {rate}")


def per_class_quota(counts: list[int], rate: float) -> list[int]:
    """Noisy clips per class: proportional to class size, summing to exactly round(rate * sum(counts))."""
    exact = np.array(counts, dtype=np.float64) * rate
    quota = np.floor(exact).astype(np.int64)
    missing = round(rate * sum(counts)) - int(quota.sum())
    # Largest fractional part first; ties go to the lower class index (a stable sort keeps the order).
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:missing]] += 1
    return [int(q) for q in np.minimum(quota, counts)]


def flip_labels(true: np.ndarray, rate: float, kind: str, seed: int) -> np.ndarray:
    """Given labels for clips with true classes `true` (0-based): exactly round(rate * N) of them wrong."""
    check_noise(rate, kind)
    true = np.asarray(true, dtype=np.int64)
    given = true.copy()
    counts = [int((true == c).sum()) for c in range(len(CLASSES))]
    quota = per_class_quota(counts, rate)
    for c, k in enumerate(quota):
        members = np.flatnonzero(true == c)
        chosen = np.sort(np.random.default_rng([seed, 202, c]).permutation(members)[:k])
        if kind == "pairs":
            given[chosen] = PAIR_FLIPS[c]
        else:
            # An offset 1..6 added modulo 7 is a uniform draw over the other 6 classes.
            offsets = np.random.default_rng([seed, 203, c]).integers(1, len(CLASSES), size=len(chosen))
            given[chosen] = (c + offsets) % len(CLASSES)
    return given

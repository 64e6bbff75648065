"""SynthDFER settings (`SynthConfig`), its presets, and the clips (split, class, frame count) they imply."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rdfer.data.records import DataError
from rdfer.data.synth.expressions import CLASSES

# DFEW's fold-1 clips per class (train, test) and the middle 80% of its clips' frame counts (10th to 90th
# percentile), so that dfew-shaped is DFEW-sized without DFEW's files; with dfew_frame_counts (DFEW's own
# frame_counts.csv beside its EmoLabel_DataSplit/) the clip list is DFEW's exactly.
DFEW_FOLD1_PER_CLASS = ((1956, 1515, 2135, 1738, 1175, 116, 721), (489, 379, 534, 435, 294, 29, 181))
DFEW_FRAMES = (42, 124)


@dataclass(frozen=True)
class SynthConfig:
    name: str
    train_per_class: tuple[int, ...] = (120,) * 7  # clips per true class, before noise
    test_per_class: tuple[int, ...] = (40,) * 7
    frames: tuple[int, int] = (16, 40)  # frames per clip, uniform in [min, max]
    image_size: int = 64
    # Identities (face geometry, skin, hair) are drawn from disjoint pools for train and test.
    train_identities: int = 100
    test_identities: int = 30
    # When set, the clip list is DFEW's: every row of fold `dfew_fold`'s split CSVs (found beside this file in
    # EmoLabel_DataSplit/) gives one clip its true class, and this file its frame count.
    dfew_frame_counts: str | None = None
    dfew_fold: int = 1
    hard_share: float = 0.25  # per split and class; reasons intensity | short_apex | distractor in turn
    normal_intensity: tuple[float, float] = (0.6, 1.0)
    hard_intensity: tuple[float, float] = (0.2, 0.4)
    strong_distractor_intensity: tuple[float, float] = (0.6, 1.0)
    weak_distractor_prob: float = 0.3  # non-hard clips that carry a weak, short distractor
    weak_distractor_intensity: tuple[float, float] = (0.1, 0.25)
    # Head half-width as a share of the frame: face-crop framing, like DFEW's clip_224x224 crops, where the
    # face fills most of the frame (a wider framing leaves the expression a few pixels at 64x64).
    face_scale: tuple[float, float] = (0.40, 0.46)
    supersample: int = 2  # drawn at this multiple of image_size, then box-downsampled (antialiasing)
    sensor_noise: tuple[float, float] = (1.5, 5.0)  # Gaussian std per clip, in 0..255 units
    jpeg_quality: int = 90
    fps: int = 25  # of the optional video files, and the time base of the head motion

    def replace(self, **overrides: object) -> SynthConfig:
        """A copy with some settings changed; a single int for *_per_class means that many per class."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown SynthDFER setting(s): {', '.join(sorted(unknown))}")
        fixed: dict[str, object] = {}
        for key, value in overrides.items():
            if key in ("train_per_class", "test_per_class") and isinstance(value, int):
                value = (value,) * len(CLASSES)
            elif isinstance(value, list):
                value = tuple(value)
            fixed[key] = value
        config = dataclasses.replace(self, **fixed)
        config.validate()
        return config

    def validate(self) -> None:
        checks = [
            (len(self.train_per_class) == len(CLASSES), "train_per_class needs 7 counts"),
            (len(self.test_per_class) == len(CLASSES), "test_per_class needs 7 counts"),
            (min(self.train_per_class + self.test_per_class) >= 0, "clip counts must be >= 0"),
            (8 <= self.frames[0] <= self.frames[1], f"frames must be 8 <= min <= max, got {self.frames}"),
            (self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}"),
            (self.train_identities >= 1 and self.test_identities >= 1, "need >= 1 identity per split"),
            (0.0 <= self.hard_share <= 1.0, f"hard_share must be in [0, 1], got {self.hard_share}"),
            (0.0 <= self.weak_distractor_prob <= 1.0, "weak_distractor_prob must be in [0, 1]"),
            (
                0.1 <= self.face_scale[0] <= self.face_scale[1] <= 0.6,
                "face_scale must be 0.1 <= min <= max <= 0.6",
            ),
            (self.supersample in (1, 2, 3, 4), "supersample must be 1..4"),
            (1 <= self.jpeg_quality <= 95, "jpeg_quality must be 1..95"),
            (self.fps >= 1, "fps must be >= 1"),
            (self.dfew_fold in range(1, 6), "dfew_fold must be 1..5"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SynthDFER config {self.name!r}: {message}")


PRESETS: dict[str, SynthConfig] = {
    # Tests: 56 clips, about 1,000 frames; generates in about a second.
    "tiny": SynthConfig(
        name="tiny",
        train_per_class=(6,) * 7,
        test_per_class=(2,) * 7,
        frames=(12, 24),
        image_size=48,
        train_identities=12,
        test_identities=4,
    ),
    # The default first run: 1,120 clips, about 31,000 frames at 64x64.
    "quick": SynthConfig(name="quick"),
    # The label-noise experiment (rdfer.experiments.noise): `quick`'s generator with twice its training clips,
    # 1,680 train / 420 test, drawn at the 32x32 the experiment trains at. Fixed before any comparison.
    "noise": SynthConfig(name="noise", train_per_class=(240,) * 7, test_per_class=(60,) * 7, image_size=32),
    # Throughput work: DFEW fold 1's 9,356 train + 2,341 test clips per class, at DFEW's clip lengths.
    "dfew-shaped": SynthConfig(
        name="dfew-shaped",
        train_per_class=DFEW_FOLD1_PER_CLASS[0],
        test_per_class=DFEW_FOLD1_PER_CLASS[1],
        frames=DFEW_FRAMES,
        image_size=112,
        train_identities=400,
        test_identities=100,
    ),
}


def resolve_config(config: SynthConfig | str, **overrides: object) -> SynthConfig:
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown SynthDFER preset {config!r}; presets: {', '.join(PRESETS)}")
        config = PRESETS[config]
    return config.replace(**overrides) if overrides else config


@dataclass(frozen=True)
class ClipSpec:
    split: str  # "train" | "test"
    true_class: int  # 0..6
    num_frames: int | None  # None: drawn from config.frames by the clip's own generator


def clip_specs(config: SynthConfig) -> list[ClipSpec]:
    """Every clip to generate, train first, grouped by class (the planner shuffles the order)."""
    if config.dfew_frame_counts is not None:
        return dfew_clip_specs(Path(config.dfew_frame_counts), config.dfew_fold)
    specs = []
    for split, per_class in (("train", config.train_per_class), ("test", config.test_per_class)):
        for c, n in enumerate(per_class):
            specs.extend(ClipSpec(split, c, None) for _ in range(n))
    return specs


def dfew_clip_specs(frame_counts: Path, fold: int) -> list[ClipSpec]:
    """DFEW fold `fold`'s clips in split-file order: their labels and real frame counts."""
    if not frame_counts.is_file():
        raise DataError(
            f"{frame_counts}: DFEW frame-count file not found (--frame-counts takes DFEW's frame_counts.csv, "
            "the file beside its EmoLabel_DataSplit/ folder)"
        )
    counts = {vid: n for vid, n in _int_rows(frame_counts, ["video_name", "num_frames"])}
    specs = []
    for split in ("train", "test"):
        path = frame_counts.parent / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"
        if not path.is_file():
            raise DataError(f"{path}: DFEW split file not found (expected beside {frame_counts})")
        for vid, label in _int_rows(path, ["video_name", "label"]):
            if not 1 <= label <= len(CLASSES):
                raise DataError(f"{path}: clip {vid} has label {label}, expected 1..{len(CLASSES)}")
            if vid not in counts:
                raise DataError(f"{frame_counts}: no frame count for DFEW clip {vid} (listed in {path})")
            specs.append(ClipSpec(split, label - 1, counts[vid]))
    return specs


def _int_rows(path: Path, header: list[str]) -> list[tuple[int, int]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        found = next(reader, None)
        if found is None or [h.strip() for h in found] != header:
            raise DataError(f"{path}:1: expected the header {','.join(header)!r}, found {found!r}")
        rows = []
        for row in reader:
            if not row:
                continue
            try:
                a, b = (int(x) for x in row)
            except ValueError:
                raise DataError(f"{path}:{reader.line_num}: expected two integers, found {row!r}") from None
            rows.append((a, b))
    return rows

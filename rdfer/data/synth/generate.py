"""Write SynthDFER in DFEW's on-disk layout, with its ground truth; the `python -m rdfer.data synth` command.

    OUT/EmoLabel_DataSplit/train(single-labeled)/set_1.csv   video_name,label (GIVEN label, maybe noisy)
    OUT/EmoLabel_DataSplit/test(single-labeled)/set_1.csv    video_name,label (true label: test is clean)
    OUT/Clip/clip_224x224/<id:05d>/<id:05d>_<n:05d>.jpg      frames, n from 1 (DFEW's own file naming)
    OUT/Clip/original/<id:05d>.webm | .mp4                   optional videos (25 fps)
    OUT/ground_truth.csv                                     one row per clip (see GROUND_TRUTH_COLUMNS)
    OUT/synth.json                                           every setting; written last = "complete" marker

Output depends only on the settings and the seed: same seed, byte-identical files, whatever the worker count.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rdfer.data.records import DataError
from rdfer.data.synth.config import PRESETS, SynthConfig, clip_specs, resolve_config
from rdfer.data.synth.expressions import CLASS_AUS, CLASSES, class_actions
from rdfer.data.synth.face import render_clip, sample_identity, sample_scene
from rdfer.data.synth.noise import NOISE_KINDS, PAIR_FLIPS, check_noise
from rdfer.data.synth.plan import HARD_REASONS, IDENTITY_TAG, ClipPlan, plan_clips
from rdfer.data.synth.video import VIDEO_CHOICES, check_encoders, extensions, write_video
from rdfer.progress import progress_bar

FORMAT_VERSION = 1
RENDER_TAG = 4
FRAMES_DIR = Path("Clip") / "clip_224x224"
VIDEOS_DIR = Path("Clip") / "original"
SPLIT_DIR = Path("EmoLabel_DataSplit")
MANIFEST = "synth.json"
GROUND_TRUTH = "ground_truth.csv"
# What generate() may delete when it regenerates a folder: only its own outputs.
_OWN_ENTRIES = {"Clip", "EmoLabel_DataSplit", GROUND_TRUTH, MANIFEST, MANIFEST + ".tmp"}
GROUND_TRUTH_COLUMNS = (
    "split",
    "video_name",
    "true_label",
    "given_label",
    "is_noisy",
    "is_hard",
    "hard_reason",
    "intensity",
    "onset",
    "apex_start",
    "apex_end",
    "offset",
    "distractor_class",
    "distractor_start",
    "distractor_end",
    "distractor_intensity",
    "num_frames",
    "identity",
)


def frame_name(clip_id: int, n: int) -> str:
    """DFEW's own naming: clip 1's frames are 00001/00001_00001.jpg, 00001_00002.jpg, ... (sortable)."""
    return f"{clip_id:05d}_{n:05d}.jpg"


def generate(
    config: SynthConfig | str,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    noise: float = 0.0,
    noise_kind: str = "symmetric",
    videos: str = "none",
    progress: bool = True,
    workers: int | None = None,
    **overrides: object,
) -> Path:
    """Generate SynthDFER into `out` and return it; a no-op when `out` already holds this exact dataset."""
    config = resolve_config(config, **overrides)
    config.validate()
    if isinstance(seed, np.integer):
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    noise = float(noise)  # 0 and 0.0 must give the same synth.json (and so reuse the same folder)
    check_noise(noise, noise_kind)
    check_encoders(videos, config.image_size)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    plans = plan_clips(config, clip_specs(config), seed, noise, noise_kind)
    manifest = _manifest_text(config, plans, seed, noise, noise_kind, videos)
    marker = out / MANIFEST
    if marker.is_file() and marker.read_text(encoding="utf-8") == manifest:
        return out
    _clear(out)
    _write_split_files(out, plans)
    _write_ground_truth(out / GROUND_TRUTH, plans)
    _render_all(out, config, plans, seed, extensions(videos), progress, workers)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(manifest, encoding="utf-8")
    tmp.replace(marker)  # last and atomic: its presence means the folder is complete
    return out


def _clear(out: Path) -> None:
    """Make `out` an empty folder, deleting only a previous (possibly partial) SynthDFER run's files."""
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_ENTRIES)
        if foreign:
            raise DataError(
                f"{out}: not empty and not a SynthDFER folder (holds {', '.join(foreign[:5])}); "
                "choose another --out"
            )
        for name in _OWN_ENTRIES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _manifest_text(
    config: SynthConfig, plans: list[ClipPlan], seed: int, noise: float, noise_kind: str, videos: str
) -> str:
    settings = dataclasses.asdict(config)
    if config.dfew_frame_counts is not None:
        settings["dfew_frame_counts"] = str(Path(config.dfew_frame_counts).resolve())
    train = [p for p in plans if p.split == "train"]
    test = [p for p in plans if p.split == "test"]
    manifest = {
        "format": "SynthDFER",
        "format_version": FORMAT_VERSION,
        "preset": config.name,
        "seed": seed,
        "noise": {
            "rate": noise,
            "kind": noise_kind,
            "pair_flips": {CLASSES[a]: CLASSES[b] for a, b in PAIR_FLIPS.items()},
        },
        "videos": videos,
        "image_size": config.image_size,
        "config": settings,
        "classes": list(CLASSES),
        "class_actions": class_actions(),
        "hard_reasons": list(HARD_REASONS),
        "layout": {
            "frames": f"{FRAMES_DIR.as_posix()}/<id:05d>/<id:05d>_<n:05d>.jpg",
            "videos": f"{VIDEOS_DIR.as_posix()}/<id:05d>.<ext>",
            "split_files": f"{SPLIT_DIR.as_posix()}/{{train,test}}(single-labeled)/set_1.csv",
            "ground_truth": GROUND_TRUTH,
        },
        "counts": {
            "train": len(train),
            "test": len(test),
            "frames": sum(p.num_frames for p in plans),
            "train_noisy": sum(p.is_noisy for p in train),
            "train_hard": sum(p.is_hard for p in train),
            "test_hard": sum(p.is_hard for p in test),
            "train_per_class": [sum(p.true_class == c for p in train) for c in range(len(CLASSES))],
            "test_per_class": [sum(p.true_class == c for p in test) for c in range(len(CLASSES))],
        },
    }
    return json.dumps(manifest, indent=2) + "\n"


def _write_split_files(out: Path, plans: list[ClipPlan]) -> None:
    for split in ("train", "test"):
        path = out / SPLIT_DIR / f"{split}(single-labeled)" / "set_1.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["video_name", "label"])
            writer.writerows([p.clip_id, p.given_class + 1] for p in plans if p.split == split)


def _write_ground_truth(path: Path, plans: list[ClipPlan]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(GROUND_TRUTH_COLUMNS)
        for p in plans:
            t, d = p.target, p.distractor
            writer.writerow(
                [
                    p.split,
                    p.clip_id,
                    p.true_class + 1,
                    p.given_class + 1,
                    int(p.is_noisy),
                    int(p.is_hard),
                    p.hard_reason,
                    f"{t.intensity:.4f}" if t else "0.0000",
                    t.onset if t else 0,
                    t.apex_start if t else 0,
                    t.apex_end if t else 0,
                    t.offset if t else 0,
                    p.distractor_class + 1 if p.distractor_class is not None else "",
                    d.onset if d else "",
                    d.offset if d else "",
                    f"{d.intensity:.4f}" if d else "",
                    p.num_frames,
                    p.identity,
                ]
            )


def clip_aus(plan: ClipPlan, resting: np.ndarray) -> np.ndarray:
    """[num_frames, n_au]: the identity's relaxed face + target expression + distractor, clipped to [0, 1]."""
    aus = np.repeat(resting[None, :], plan.num_frames, axis=0)
    if plan.target is not None:
        aus += plan.target.curve(plan.num_frames)[:, None] * CLASS_AUS[plan.true_class][None, :]
    if plan.distractor is not None and plan.distractor_class is not None:
        aus += plan.distractor.curve(plan.num_frames)[:, None] * CLASS_AUS[plan.distractor_class][None, :]
    return np.clip(aus, 0.0, 1.0)


def render_plan(plan: ClipPlan, config: SynthConfig, seed: int) -> list[np.ndarray]:
    """The frames of one clip (uint8 [S, S, 3] each); depends only on the plan, the config and the seed."""
    identity = sample_identity(np.random.default_rng([seed, IDENTITY_TAG, plan.identity]))
    rng = np.random.default_rng([seed, RENDER_TAG, plan.clip_id])
    scene = sample_scene(
        rng, config.image_size, config.supersample, plan.num_frames, config.sensor_noise, config.face_scale
    )
    aus = clip_aus(plan, identity.resting)
    return render_clip(identity, scene, aus, config.image_size, config.supersample, config.fps, rng)


def _write_clip(job: tuple[ClipPlan, SynthConfig, int, str, tuple[str, ...]]) -> int:
    plan, config, seed, root, video_exts = job
    frames = render_plan(plan, config, seed)
    folder = Path(root) / FRAMES_DIR / f"{plan.clip_id:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    for n, pixels in enumerate(frames, start=1):
        buffer.seek(0)
        buffer.truncate()
        # Fixed encoder settings: PIL's JPEG output is then a pure function of the pixels.
        Image.fromarray(pixels).save(
            buffer, format="JPEG", quality=config.jpeg_quality, subsampling=0, optimize=False
        )
        (folder / frame_name(plan.clip_id, n)).write_bytes(buffer.getvalue())
    for ext in video_exts:
        write_video(Path(root) / VIDEOS_DIR / f"{plan.clip_id:05d}.{ext}", frames, config.fps)
    return plan.num_frames


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _render_all(
    out: Path,
    config: SynthConfig,
    plans: list[ClipPlan],
    seed: int,
    video_exts: list[str],
    progress: bool,
    workers: int,
) -> None:
    if video_exts:
        (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(p, config, seed, str(out), tuple(video_exts)) for p in plans]
    bar = progress_bar(
        total=sum(p.num_frames for p in plans),
        unit="frame",
        desc=f"SynthDFER {config.name}",
        enabled=progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        if workers == 1 or len(jobs) < 4 * workers:
            for job in jobs:
                bar.update(_write_clip(job))
        else:
            # Each clip writes its own files from its own generators: the pool changes nothing in the output.
            with multiprocessing.get_context().Pool(workers) as pool:
                for n in pool.imap_unordered(_write_clip, jobs, chunksize=4):
                    bar.update(n)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="quick", choices=list(PRESETS), help="size of the benchmark (default quick)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (DFEW layout)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical output (default 0)")
    parser.add_argument(
        "--noise", type=float, default=0.0, help="share of training labels made wrong (default 0)"
    )
    parser.add_argument("--noise-kind", default="symmetric", choices=NOISE_KINDS, help="label-noise model")
    parser.add_argument(
        "--videos", default="none", choices=VIDEO_CHOICES, help="also write .webm (VP9) / .mp4 (H.264)"
    )
    parser.add_argument("--image-size", type=int, help="frame size in pixels (preset's default otherwise)")
    parser.add_argument("--train-per-class", type=int, help="training clips per class")
    parser.add_argument("--test-per-class", type=int, help="test clips per class")
    parser.add_argument("--frames", type=int, nargs=2, metavar=("MIN", "MAX"), help="frames per clip")
    parser.add_argument("--hard-share", type=float, help="share of hard clips per class (default 0.25)")
    parser.add_argument("--frame-counts", help="DFEW frame_counts.csv for the dfew-shaped preset")
    parser.add_argument("--workers", type=int, help="processes (default: available cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    names = {
        "image_size": "image_size",
        "train_per_class": "train_per_class",
        "test_per_class": "test_per_class",
        "frames": "frames",
        "hard_share": "hard_share",
        "frame_counts": "dfew_frame_counts",
    }
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    start = time.perf_counter()
    marker = args.out / MANIFEST
    before = marker.stat().st_mtime_ns if marker.is_file() else None
    out = generate(
        args.preset,
        args.out,
        seed=args.seed,
        noise=args.noise,
        noise_kind=args.noise_kind,
        videos=args.videos,
        progress=not args.no_progress,
        workers=args.workers,
        **overrides,
    )
    counts = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["counts"]
    reused = before is not None and marker.stat().st_mtime_ns == before
    print(
        f"SynthDFER {args.preset!r} {'already complete in' if reused else 'written to'} {out.resolve()}: "
        f"{counts['train']} train / {counts['test']} test clips, {counts['frames']} frames, "
        f"{counts['train_noisy']} noisy training labels, "
        f"{counts['train_hard'] + counts['test_hard']} hard clips "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0

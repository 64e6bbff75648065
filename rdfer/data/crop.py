"""python -m rdfer.data crop --input VIDEO_OR_DIR... --out DIR: raw videos -> DFEW's frame-folder layout.

Each video becomes OUT/<video name without suffix>/00001.jpg, 00002.jpg, ... (DFEW's `clip_224x224` layout:
one square face crop per frame, 224x224 by default), using the face preprocessing of rdfer.data.faces. The
report (JSON on stdout, and OUT/crop_report.json) lists, per video, the frames where no face was found (they
are cropped at the box interpolated from their neighbours) and every video that failed, with the reason; the
exit status is 1 when any video failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from rdfer.data import faces
from rdfer.data.frames import VIDEO_SUFFIXES, videos_in
from rdfer.data.records import DataError
from rdfer.data.sampling import uniform_indices


def find_videos(inputs: list[Path]) -> list[Path]:
    """Video files named directly, and the video files inside named folders, sorted per folder."""
    videos: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = videos_in(item)
            if not found:
                raise DataError(f"{item}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in the folder")
            videos.extend(found)
        elif item.exists():
            videos.append(item)
        else:
            raise DataError(f"{item}: missing")
    return videos


def crop_video(
    video: Path,
    out_dir: Path,
    size: int = 224,
    margin: float = 0.25,
    num_frames: int | None = None,
    quality: int = 95,
    progress: bool = False,
) -> dict:
    """Write the face crops of a video's frames (every frame, or `num_frames` at uniform indices) as JPEGs."""
    info = faces.probe(video)
    indices = (
        np.arange(info.num_frames, dtype=np.int64)
        if num_frames is None
        else uniform_indices(info.num_frames, num_frames)
    )
    with tqdm(
        total=2 * len(indices), desc=video.name, disable=not progress, leave=False, dynamic_ncols=True
    ) as bar:
        track = faces.track_face(video, indices, margin=margin, progress=bar)
        out_dir.mkdir(parents=True, exist_ok=True)
        for pos, rgb in faces.iter_frames(video, indices):
            crop = faces.crop_square(rgb, track.boxes[pos], size)
            Image.fromarray(crop).save(out_dir / f"{pos + 1:05d}.jpg", quality=quality)
            bar.update(1)
    return {
        "video": str(video),
        "out": str(out_dir),
        "frames": len(indices),
        "frames_without_face": track.frames_without_face,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        type=Path,
        help="video files, or folders whose video files are all cropped",
    )
    parser.add_argument("--out", required=True, type=Path, help="writes OUT/<video stem>/00001.jpg ...")
    parser.add_argument("--size", type=int, default=224, help="side of the square crops (DFEW: 224)")
    parser.add_argument("--margin", type=float, default=0.25, help="crop side = face side x (1 + margin)")
    parser.add_argument(
        "--num-frames",
        type=int,
        default=None,
        help="keep this many frames at uniform indices (default: every frame)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        videos = find_videos(args.input)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stems = [v.stem for v in videos]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        print(f"error: several videos would write the same folder: {dup}", file=sys.stderr)
        return 2
    progress = not args.no_progress and sys.stderr.isatty()
    report: dict = {"videos": [], "failed": []}
    for video in tqdm(videos, desc="crop", disable=not progress, dynamic_ncols=True):
        try:
            report["videos"].append(
                crop_video(
                    video, args.out / video.stem, args.size, args.margin, args.num_frames, progress=progress
                )
            )
        except DataError as e:  # NoFaceError included: reported, the other videos still run
            report["failed"].append({"video": str(video), "error": str(e)})
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (args.out / "crop_report.json").write_text(text + "\n")
    print(text)
    for failure in report["failed"]:
        print(f"error: {failure['error']}", file=sys.stderr)
    return 1 if report["failed"] else 0

"""rdfer.predict() and `python -m rdfer.predict VIDEO_OR_DIR... --checkpoint P [--plot DIR] [--output FILE]`:
the expression of raw face videos, its probabilities along each video's timeline and where the key expression
is, as JSON.

A video file goes through the face preprocessing of rdfer.data.faces (detect, smooth, square crop, resize); a
folder of frame images is taken as already-cropped face frames (DFEW's layout, or the output of
`python -m rdfer.data crop`) unless --detect is given. A folder of video files predicts each of them. The
model sees T = data.num_frames frames at uniform indices (docs/method.md §1), exactly as in evaluation.

Per video: {"video", "duration_s", "fps", "class", "probabilities", "timeline": [{"time_s", "frame",
"probabilities"}] (the synopsis stream's instances), "key_positions_s", "key_frames", "agreement",
"majority_class", "frames_without_face"}; a video that fails is {"video", "error"} and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from rdfer import cli
from rdfer.data import faces
from rdfer.data.frames import IMAGE_SUFFIXES, read_clip, videos_in
from rdfer.data.sampling import uniform_indices
from rdfer.errors import ConfigError, DataError
from rdfer.models import RDFER
from rdfer.ops.agreement import majority_vote
from rdfer.runtime import pick_device


def _model(checkpoint: str | Path | RDFER, device) -> RDFER:
    if isinstance(checkpoint, RDFER):
        return checkpoint.to(device).eval()
    return RDFER.from_checkpoint(checkpoint, device)


def _seconds(times: np.ndarray, fps: float | None, frame: int) -> float | None:
    # Frame folders without a rate have no time axis: their entries carry the frame index only.
    return float(times[frame]) if fps else None


def _probs(classes, p: torch.Tensor) -> dict[str, float]:
    return {c: float(v) for c, v in zip(classes, p.tolist(), strict=False)}


@torch.no_grad()
def predict(
    video_or_frames: str | Path,
    checkpoint,
    *,
    device: str | torch.device = "cpu",
    plot: str | Path | None = None,
    detect: bool | None = None,
    fps: float | None = None,
    margin: float = 0.25,
) -> dict:
    """Predict one clip: a video file (faces detected and cropped) or a frame folder (taken as face crops
    unless `detect=True`). `checkpoint` is a path or an already loaded RDFER (rdfer.load_model).
    `fps` gives a frame folder its rate (videos use their own). `plot` writes a PNG timeline there.

    Raises DataError (NoFaceError when no face is found) naming the file. When faces are found in only part of
    the sampled frames, the result's "face_coverage" says in which share, and a warning says so.
    """
    path = Path(video_or_frames)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"{path}: a still image, not a video: give a video file, or a folder of face frames")
    if not margin >= 0:
        raise ConfigError(f"margin must be 0 or more (crop side = face side x (1 + margin)), got {margin}")
    model = _model(checkpoint, device)
    info = faces.probe(path, fps)
    indices = uniform_indices(info.num_frames, model.config.data.num_frames)
    frames, missing = _face_frames(path, indices, model.config.data.image_size, detect, margin)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).unsqueeze(0).to(device)  # [1, T, 3, H, W] uint8
    result = {"video": str(path), "duration_s": info.duration, "fps": info.fps}
    result |= _read_out(model, model(x), info, indices)
    result |= {"frames_without_face": missing, "face_coverage": 1.0 - len(missing) / len(np.unique(indices))}
    if plot is not None:
        plot_timeline(result, Path(plot))
    return result


def _face_frames(path: Path, indices: np.ndarray, size: int, detect: bool | None, margin: float):
    """The clip's frames at `indices` [T, H, W, 3] uint8 (face crops) and the video frames without a face."""
    if detect if detect is not None else not path.is_dir():
        track = faces.track_face(path, indices, margin=margin)
        frames, missing = faces.crop_track(track, size), track.frames_without_face
    else:
        frames, missing = read_clip(path, indices, size), []
    if missing:
        coverage = 1.0 - len(missing) / len(np.unique(indices))
        warnings.warn(
            f"{path}: a face was found in {coverage:.0%} of the sampled frames; the others are cropped "
            "at a box interpolated from their neighbours (see frames_without_face)",
            stacklevel=3,
        )
    return frames, missing


def _read_out(model, out: dict, info, indices: np.ndarray) -> dict:
    """The model's output for one clip as the result's class, timeline, key positions and agreement."""
    classes, t = model.classes, model.config.data.num_frames
    probs = out["logits"][0].float().softmax(-1).cpu()
    syn_probs = out["synopsis_instance_logits"][0].float().softmax(-1).cpu()
    syn_frames = indices[out["synopsis_indices"][0].cpu().numpy()]
    timeline = [
        {
            "time_s": _seconds(info.times, info.fps, int(f)),
            "frame": int(f),
            "probabilities": _probs(classes, p),
        }
        for f, p in zip(syn_frames, syn_probs, strict=False)
    ]
    # A key position is a (possibly fractional) place on the T-frame timeline: round half up, then map to the
    # video frame that timeline position was loaded from.
    key_t = [min(t - 1, max(0, math.floor(p + 0.5))) for p in out["key_positions"][0].float().cpu().tolist()]
    key_frames = [int(indices[k]) for k in key_t]
    _, majority, agreement = majority_vote(out["detail_instance_logits"].float().cpu())  # the clips' vote
    return {
        "class": classes[int(probs.argmax())],
        "probabilities": _probs(classes, probs),
        "timeline": timeline,
        "key_positions_s": [_seconds(info.times, info.fps, f) for f in key_frames],
        "key_frames": key_frames,
        "agreement": float(agreement[0]),
        "majority_class": classes[int(majority[0])],
    }


def plot_timeline(result: dict, path: Path) -> None:
    """A PNG: each class's synopsis probability along the video, the key positions as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = result["fps"] is not None
    key = "time_s" if timed else "frame"
    xs = [e[key] for e in result["timeline"]]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for c in result["probabilities"]:
        ax.plot(xs, [e["probabilities"][c] for e in result["timeline"]], marker=".", label=c)
    for k in result["key_positions_s"] if timed else result["key_frames"]:
        ax.axvline(k, color="black", linestyle="--", linewidth=0.8)
    step = 1 / result["fps"] if timed else 1.0  # one frame on the x axis
    for f in result["frames_without_face"]:  # shaded: the crop there is interpolated, not detected
        ax.axvspan((f - 0.5) * step, (f + 0.5) * step, color="red", alpha=0.15)
    if timed and result["duration_s"]:
        ax.set_xlim(0, result["duration_s"])
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)" if timed else "frame")
    ax.set_ylabel("probability")
    ax.set_title(
        f"{Path(result['video']).name}: {result['class']} "
        f"({result['probabilities'][result['class']]:.2f}), agreement {result['agreement']:.2f}"
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def expand_inputs(items: list[Path]) -> list[Path]:
    """Videos and frame folders named directly; a folder holding video files stands for those videos."""
    clips: list[Path] = []
    for item in items:
        if item.is_dir():
            found = videos_in(item) or [item]
            if found == [item] and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in item.iterdir()):
                raise DataError(f"{item}: no videos or frame images (.jpg/.jpeg/.png) in the folder")
            clips.extend(found)
        else:
            clips.append(item)
    return clips


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rdfer.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, help="video files, frame folders, or folders of videos")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--plot", type=Path, help="a folder: writes <video file name>.png timelines there")
    p.add_argument("--output", type=Path, help="write the JSON here too")
    p.add_argument("--detect", action="store_true", help="detect and crop faces in frame folders too")
    p.add_argument("--fps", type=float, help="frame rate of frame folders (videos use their own)")
    p.add_argument("--margin", type=float, default=0.25, help="crop side = face side x (1 + margin)")
    p.add_argument("--debug", action="store_true", help="show tracebacks (also RDFER_DEBUG=1)")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.margin >= 0:
        raise ConfigError(
            f"--margin must be 0 or more (crop side = face side x (1 + margin)), got {args.margin}"
        )
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError(f"--output {args.output}: the folder {args.output.parent} does not exist")
    device = pick_device(args.device)
    model = _model(args.checkpoint, device)
    results, failed = [], False
    for clip in expand_inputs(args.inputs):
        png = args.plot / f"{clip.name}.png" if args.plot else None  # a.mp4 and a.mov: two plots
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results.append(
                    predict(
                        clip,
                        model,
                        device=device,
                        plot=png,
                        detect=args.detect or None,
                        fps=args.fps,
                        margin=args.margin,
                    )
                )
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
        except DataError as e:
            results.append({"video": str(clip), "error": str(e)})
            print(f"error: {e}", file=sys.stderr)
            failed = True
    text = json.dumps(results, indent=2)
    print(text)  # first: a failing --output must not lose the results
    if args.output:
        args.output.write_text(text + "\n")
    return 1 if failed else 0

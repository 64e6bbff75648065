"""Reading the frames of a clip: a folder of frame images (DFEW, FERV39K) or a video file (MAFW).

Every decoding failure becomes a DataError that names the file and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from rdfer.data.records import ClipRecord, DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
_DIGITS = re.compile(r"(\d+)")


def _natural_key(path: Path) -> tuple:
    # re.split with a capture group alternates text, number, text, ... so the tuples compare position by
    # position without mixing str and int; the full name breaks ties such as "01.jpg" vs "1.jpg".
    parts = _DIGITS.split(path.name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (path.name,)


def list_frames(folder: Path) -> list[Path]:
    """The frame images of a folder (.jpg/.jpeg/.png, any case) in natural order: "2.jpg" before "10.jpg".

    Hidden files (".name", e.g. macOS "._0001.jpg" forks) are not frames and are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "not a folder" if folder.exists() else "missing folder"
        raise DataError(f"{folder}: {problem}")
    try:
        frames = [
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ]
    except OSError as e:  # e.g. no permission to list it
        raise DataError(f"{folder}: cannot list the folder ({e})") from e
    if not frames:
        raise DataError(f"{folder}: no frame images (.jpg/.jpeg/.png) in the folder")
    frames.sort(key=_natural_key)
    return frames


def videos_in(folder: Path) -> list[Path]:
    """The video files (by suffix, hidden files left out) directly inside a folder, sorted by name."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    )


def _missing(path: Path) -> str:
    return f"{path}: missing (neither a frame folder nor a video file)"


def open_video(path: Path):
    """The PyAV container and video stream of a video file; DataError naming the file if it cannot be read.
    PyAV is imported here, so frame folders never need it."""
    if not path.exists():
        raise DataError(_missing(path))
    try:
        import av
    except ImportError:
        raise DataError(f"{path}: reading video files needs PyAV (pip install av)") from None
    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises a family of FFmpegError/OSError subclasses for unreadable files
        raise DataError(f"{path}: cannot open video ({e})") from e
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: no video stream in the file")
    return container, container.streams.video[0]


def count_frames(path: Path) -> int:
    """Frames in a clip: the images of a frame folder, or a video stream's frame count.

    For a video the container's count is used when it has one (mp4, avi); otherwise (webm/mkv) every frame is
    decoded to count them.
    """
    path = Path(path)
    if path.is_dir():
        return len(list_frames(path))
    container, stream = open_video(path)
    try:
        if stream.frames > 0:
            return int(stream.frames)
        n = 0
        for _ in container.decode(stream):
            n += 1
    except Exception as e:
        raise DataError(f"{path}: cannot decode video ({e})") from e
    finally:
        container.close()
    if n == 0:
        raise DataError(f"{path}: the video stream has no decodable frames")
    return n


def _decode_image(path: Path, size: int) -> np.ndarray:
    """An image file as uint8 [size, size, 3] RGB; load() forces the full decode so truncation fails here."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb)
    except FileNotFoundError as e:
        raise DataError(f"{path}: missing file") from e
    except Exception as e:  # corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error ...
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def _plan(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct indices (sorted), the first output position of each, and each position's distinct slot."""
    uniq, first, inverse = np.unique(indices, return_index=True, return_inverse=True)
    return uniq, first, inverse.reshape(-1)


def _fill_repeats(out: np.ndarray, first: np.ndarray, inverse: np.ndarray) -> None:
    # Positions that repeat an earlier index copy the already decoded frame instead of decoding it again.
    src = first[inverse]
    dup = np.nonzero(src != np.arange(len(inverse)))[0]
    if dup.size:
        out[dup] = out[src[dup]]


def _check_indices(indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"indices must be a non-empty 1-D integer array, got shape {indices.shape} dtype {indices.dtype}"
        )
    if indices.min() < 0:
        raise ValueError(f"negative frame index {int(indices.min())}")
    return indices


def read_frame_files(files: list[Path], indices: np.ndarray, size: int) -> np.ndarray:
    """Frames `indices` of an ordered list of frame images as uint8 [T, size, size, 3] RGB."""
    indices = _check_indices(indices)
    if int(indices.max()) >= len(files):
        where = files[0].parent if files else "frame list"
        raise DataError(
            f"{where}: frame index {int(indices.max())} out of range, the clip has {len(files)} frames"
        )
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    uniq, first, inverse = _plan(indices)
    for frame_index, pos in zip(uniq, first, strict=False):
        out[pos] = _decode_image(files[frame_index], size)
    _fill_repeats(out, first, inverse)
    return out


def decode_video(path: Path, wanted: np.ndarray) -> Iterator[tuple[int, object]]:
    """(k, frame) for each k in order, where frame (an av.VideoFrame) is the video's frame number wanted[k]
    (wanted: distinct frame numbers, ascending). Decodes sequentially, without seeking: clips are short and
    seeking is inexact for many codecs. Every failure, and a video that ends early, is a DataError naming
    the file."""
    container, stream = open_video(path)
    k = decoded = 0
    try:
        for frame_index, frame in enumerate(container.decode(stream)):
            decoded = frame_index + 1
            if frame_index == wanted[k]:
                yield k, frame
                k += 1
                if k == len(wanted):
                    break
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if k < len(wanted):
        raise DataError(
            f"{path}: video ended after {decoded} frames, frame {int(wanted[k])} was requested "
            "(the container's frame count may be wrong)"
        )


def _read_video(path: Path, indices: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    uniq, first, inverse = _plan(indices)
    for k, frame in decode_video(path, uniq):
        img = frame.to_image()  # RGB, full size; resized by PIL exactly as frame images are
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        out[first[k]] = np.asarray(img)
    _fill_repeats(out, first, inverse)
    return out


def read_clip(path: Path, indices: np.ndarray, size: int) -> np.ndarray:
    """Frames `indices` of a clip (frame folder or video) as uint8 [T, size, size, 3] RGB.

    Each frame is resized to size x size with PIL's bilinear filter; each distinct index is decoded once.
    """
    path = Path(path)
    if path.is_dir():
        return read_frame_files(list_frames(path), indices, size)
    return _read_video(path, _check_indices(indices), size)


def verify_record(record: ClipRecord) -> list[str]:
    """Every problem of a clip's files as "<file>: <problem>" strings; [] when every frame decodes."""
    path = Path(record.path)
    if not path.exists():
        return [_missing(path)]
    if path.is_dir():
        try:
            files = list_frames(path)
        except DataError as e:
            return [str(e)]
        problems = []
        for f in files:
            try:
                with Image.open(f) as img:
                    img.load()
            except Exception as e:
                problems.append(f"{f}: cannot decode image ({type(e).__name__}: {e})")
        return problems
    try:
        container, stream = open_video(path)
    except DataError as e:
        return [str(e)]
    declared = stream.frames
    decoded = 0
    try:
        for _ in container.decode(stream):
            decoded += 1
    except Exception as e:
        return [f"{path}: cannot decode video after {decoded} frames ({type(e).__name__}: {e})"]
    finally:
        container.close()
    if decoded == 0:
        return [f"{path}: the video stream has no decodable frames"]
    if declared > 0 and declared != decoded:
        # The loader trusts the container's count to place its indices, so a wrong count is a problem.
        return [f"{path}: the container declares {declared} frames but {decoded} decode"]
    return []

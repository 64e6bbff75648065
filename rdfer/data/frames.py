"""Reading the frames of a clip: a folder of frame images (DFEW, FERV39K) or a video file (MAFW).

Every decoding failure becomes a DataError that names the file and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

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


_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})  # 16-bit grey PNGs open as one of these
_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _opaque(img: Image.Image, path: Path) -> Image.Image:
    """Drop an alpha channel that is all opaque; a frame with see-through pixels is refused: what lies behind
    them is not in the file, and the decoders would each guess a different background."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode not in _ALPHA:
        return img
    low, _ = img.getchannel("A").getextrema()
    if low < 255:
        raise DataError(f"{path}: the frame has transparent pixels (mode {img.mode}): save it without alpha")
    return img.convert("RGB")


def frame_rgb(img: Image.Image, path: Path) -> Image.Image:
    """A loaded frame image as RGB, as a viewer shows it: turned as its EXIF orientation says (phones write
    it there), 16-bit grey scaled to 8 bits (PIL's own conversion clips it to white), palette, grey and CMYK
    converted; see-through and unknown modes refused with a DataError naming the file."""
    img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT:
        wide = np.asarray(img, dtype=np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise DataError(
                f"{path}: a {img.mode} frame with values outside 16 bits is not an image rdfer reads"
            )
        img = Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
    img = _opaque(img, path)
    if img.mode not in ("RGB", "L", "1", "P", "CMYK", "YCbCr"):
        raise DataError(
            f"{path}: image mode {img.mode} is not a frame rdfer reads (RGB, grey, palette, CMYK)"
        )
    return img if img.mode == "RGB" else img.convert("RGB")


def _decode_image(path: Path, size: int) -> np.ndarray:
    """An image file as uint8 [size, size, 3] RGB; load() forces the full decode so truncation fails here."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = frame_rgb(img, path)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: missing file") from e
    except Exception as e:  # corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error ...
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


# What a whole file ends with; a file that ends so, in a mode read without looking at its pixels, is taken as
# whole by the quick check (anything else is decoded to find out).
_TRAILERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
_PLAIN_MODES = frozenset({"RGB", "L", "1", "CMYK", "YCbCr"} | _SIXTEEN_BIT)


def _looks_whole(img: Image.Image, path: Path) -> bool:
    trailer = _TRAILERS.get(img.format or "")
    if trailer is None or img.mode not in _PLAIN_MODES:
        return False
    with open(path, "rb") as f:
        f.seek(-min(len(trailer), f.seek(0, 2)), 2)
        return f.read() == trailer


def check_image(path: Path, whole: bool = True) -> str | None:
    """The problem of one frame image, or None when it reads as a frame. `whole`: every byte is decoded (a
    JPEG at an eighth of its size, which still reads all its data) and converted as when read. Otherwise its
    header is read and its last bytes looked at, and only a file that does not look whole is decoded."""
    try:
        with Image.open(path) as img:
            if whole or not _looks_whole(img, path):
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
                frame_rgb(img, path)
    except DataError as e:
        return str(e)
    except Exception as e:
        return f"{path}: cannot decode image ({type(e).__name__}: {e})"
    return None


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


def verify_record(record: ClipRecord, whole: bool = True) -> list[str]:
    """Every problem of a clip's files as "<file>: <problem>" strings; [] when every frame decodes. Without
    `whole`, the quick check: frame images by check_image(whole=False), a video by opening its container."""
    path = Path(record.path)
    if not path.exists():
        return [_missing(path)]
    if path.is_dir():
        try:
            files = list_frames(path)
        except DataError as e:
            return [str(e)]
        return [p for p in (check_image(f, whole) for f in files) if p is not None]
    try:
        container, stream = open_video(path)
    except DataError as e:
        return [str(e)]
    if not whole:
        container.close()
        return []
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

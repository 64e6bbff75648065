"""Optional video copies of SynthDFER clips: VP9 in WebM (DALI decodes it on the CPU) and H.264 in MP4 (GPU).

Single-threaded encoders and "bitexact" muxers (no random container UIDs, no library-version strings, no
creation time), so the same frames give byte-identical files on the same PyAV/FFmpeg build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_CHOICES: tuple[str, ...] = ("none", "webm", "mp4", "both")

# extension -> (container format, encoder, encoder options)
_FORMATS: dict[str, tuple[str, str, dict[str, str]]] = {
    "webm": (
        "webm",
        "libvpx-vp9",
        {"crf": "20", "b": "0", "threads": "1", "row-mt": "0", "deadline": "good", "cpu-used": "4"},
    ),
    # No B-frames (simplest for hardware decoders and frame-accurate seeking); no macroblock tree: with it,
    # x264 gave a different bitstream for the same frames now and then within one process (seen with 48x48).
    "mp4": (
        "mp4",
        "libx264",
        {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "bframes=0:mbtree=0"},
    ),
}


def extensions(videos: str) -> list[str]:
    if videos not in VIDEO_CHOICES:
        raise ValueError(f"videos must be one of {', '.join(VIDEO_CHOICES)}; got {videos!r}")
    return {"none": [], "webm": ["webm"], "mp4": ["mp4"], "both": ["webm", "mp4"]}[videos]


def check_encoders(videos: str, image_size: int) -> None:
    """Fail before any clip is drawn if this PyAV cannot write what was asked for."""
    exts = extensions(videos)
    if not exts:
        return
    import av  # only for videos: SynthDFER's frame folders need no PyAV

    if image_size % 2:
        raise ValueError(f"video files need an even image size (yuv420p), got {image_size}")
    for ext in exts:
        encoder = _FORMATS[ext][1]
        try:
            av.codec.Codec(encoder, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError is a ValueError
            raise RuntimeError(
                f"videos={videos!r} needs the {encoder} encoder for .{ext} files, but this PyAV "
                f"(av {av.__version__}) was built without it; use videos='none' or a PyAV build with "
                f"{encoder}"
            ) from None


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB uint8 frames [H, W, 3] into `path` (.webm or .mp4), written atomically."""
    import av

    fmt, encoder, options = _FORMATS[path.suffix.lstrip(".")]
    tmp = path.with_name(path.name + ".tmp")
    with av.open(str(tmp), "w", format=fmt, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=fps, options=dict(options))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.replace(path)

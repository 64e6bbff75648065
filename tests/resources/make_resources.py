"""Regenerate the committed bad-input resources: python tests/resources/make_resources.py (deterministic)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(0)
    # Random bytes behind a .jpg name: no image header at all.
    (HERE / "corrupt.jpg").write_bytes(rng.integers(0, 256, 1024, dtype=np.uint8).tobytes())
    # A real JPEG cut in half: the header parses, the scan data ends early.
    pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (HERE / "truncated.jpg").write_bytes(data[: len(data) // 2])
    # Garbage bytes behind a .webm name: no container FFmpeg can open.
    (HERE / "bad_video.webm").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())


if __name__ == "__main__":
    main()

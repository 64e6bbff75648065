"""Generation speed of SynthDFER per frame at 64 vs 32 px (quick's generator otherwise), 2 workers."""

import shutil
import time
from pathlib import Path

from rdfer.data.synth import generate

for size in (64, 32):
    out = Path(f"/work/research-data/gen-time-{size}")
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    generate(
        "quick",
        out,
        seed=0,
        noise=0.0,
        progress=False,
        workers=2,
        train_per_class=10,
        test_per_class=4,
        image_size=size,
    )
    dt = time.perf_counter() - t
    import json

    frames = json.loads((out / "synth.json").read_text())["counts"]["frames"]
    print(f"size {size}: {frames} frames in {dt:.1f}s = {1000 * dt / frames:.2f} ms/frame", flush=True)

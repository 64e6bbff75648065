"""Generate the candidate experiment dataset: SynthDFER quick's generator with 240 train / 60 test clips per
class, drawn at 32x32 (the size the experiment trains at), seed 0, clean labels. Prints the time."""

import json
import sys
import time
from pathlib import Path

from rdfer.data.synth import generate

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/research-data/noise-seed0")
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
t = time.perf_counter()
generate(
    "quick",
    out,
    seed=seed,
    noise=0.0,
    progress=False,
    workers=2,
    train_per_class=240,
    test_per_class=60,
    image_size=32,
)
counts = json.loads((out / "synth.json").read_text())["counts"]
print(f"{out}: {counts} in {time.perf_counter() - t:.1f}s", flush=True)

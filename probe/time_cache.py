"""Frame-cache fill time of a SynthDFER folder at 32x32, T=32 (data.workers=1, as the quick config)."""

import sys
import time

from rdfer.config import load_config
from rdfer.data.loader import cache_split_frames
from rdfer.data.prepare import load_splits

cfg = load_config("quick", ["data.image_size=32", "data.cache_frames=true", f"data.root={sys.argv[1]}"])
t = time.perf_counter()
tr, te = load_splits(cfg.data, progress=False)
print(f"load_splits {time.perf_counter() - t:.1f}s")
for s in (tr, te):
    t = time.perf_counter()
    n = cache_split_frames(s, 32, 32, cfg.data.workers, progress=False)
    print(f"cache {s.name}: {n} clips in {time.perf_counter() - t:.1f}s", flush=True)

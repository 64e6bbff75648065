"""Describe stage-1 suspects (GMM on cumulative loss) per true category (not for merging).
python probe/suspects.py RUN ROOT LO HI"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import groups, softmax  # noqa: E402
from sim_rule import gmm_suspect  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

run, root, lo, hi = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = dict(np.load(run / "probe.npz"))
given, true = d["given"], d["true"]
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
N = len(given)
ar = np.arange(N)
pv = softmax(d["video"][lo - 1 : hi].astype(np.float32))  # [E, N, C]
loss = -np.log(pv[:, ar, given]).mean(0)
s, _ = gmm_suspect(loss)
p = pv.mean(0)
other = np.where(np.eye(7, dtype=bool)[given], -1, p)
oc = other.argmax(-1)
views = {
    k: softmax(d[k][lo - 1 : hi].astype(np.float32)).mean(0)
    for k in ("synopsis_instance", "detail_instance", "frame_head", "clip_head")
}  # [N, V, C]
for name in ("noisy", "easy", "intensity", "short_apex", "distractor"):
    m = s & g[name]
    if not m.any():
        continue
    row = f"{name:>10} suspects {m.sum():4d}: other=neutral {np.mean(oc[m] == 2):.2f}, label=neutral {np.mean(given[m] == 2):.2f}, p_other {other[m].max(-1).mean():.2f}, p_y {p[m, given[m]].mean():.2f}"
    for k, v in views.items():
        best = v[m][:, :, :][np.arange(m.sum()), :, given[m]].max(-1)
        row += f" | {k[:6]} best-view p_y {best.mean():.2f}"
    print(row)

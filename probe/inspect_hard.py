"""What do hard clips that look noisy look like? (not for merging) python probe/inspect_hard.py RUN ROOT LO HI"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import groups, softmax  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

run, root, lo, hi = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = np.load(run / "probe.npz")
given, true = d["given"], d["true"]
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
truth = [tk[str(k)] for k in d["train_keys"]]
g = groups(truth, given, true)
p = softmax(d["video"][lo - 1 : hi].astype(np.float32)).mean(0)  # [N, C]
pred = p.argmax(-1)
loss = -np.log(p[np.arange(len(given)), given])
thr = np.quantile(loss[g["noisy"]], 0.25)  # a noisy sample's lower-quartile loss
print(f"window {lo}-{hi}; loss threshold (noisy lower quartile) {thr:.2f}")
for name in ("noisy", "easy", "intensity", "short_apex", "distractor"):
    m = g[name]
    hi_ = m & (loss > thr)
    print(
        f"{name:>10}: n={m.sum():4d}, above thr {hi_.sum() / m.sum():.2f}; pred==true {np.mean(pred[m] == true[m]):.2f}, "
        f"pred==given {np.mean(pred[m] == given[m]):.2f}, pred==neutral(2) {np.mean(pred[m] == 2):.2f}; "
        f"of those above thr: pred==true {np.mean(pred[hi_] == true[hi_]) if hi_.any() else 0:.2f}, "
        f"pred==neutral {np.mean(pred[hi_] == 2) if hi_.any() else 0:.2f}, mean maxp {p[hi_].max(-1).mean() if hi_.any() else 0:.2f}"
    )
inten = np.array([t.intensity for t in truth])
m = g["intensity"]
print("intensity clips: loss vs intensity corr", np.corrcoef(inten[m], loss[m])[0, 1].round(2))
print("true-class share among hard (non-neutral true):", np.bincount(true[g["hard"]], minlength=7))

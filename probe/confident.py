"""Offline: Confident Learning's confident joint (Northcutt et al. 2021) on the cumulative mean video
probabilities, as a stage-1/noise estimate, vs the GMM tail (not for merging).
python probe/confident.py ROOT EPOCHS RUN..."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import auroc, groups, softmax  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

root, epochs, runs = Path(sys.argv[1]), [int(e) for e in sys.argv[2].split(",")], sys.argv[3:]
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
print(
    "| run | epoch | flagged | est. noise share | precision | recall | hard flagged | intensity | short_apex "
    "| distractor | easy flagged | relabel acc | margin-to-threshold AUROC vs clean / vs hard |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    d = dict(np.load(Path(run) / "probe.npz"))
    given, true = d["given"], d["true"]
    g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
    ar = np.arange(len(given))
    for e in epochs:
        p = softmax(d["video"][:e].astype(np.float32)).mean(0)  # cumulative mean probabilities
        t = np.array([p[given == j, j].mean() for j in range(7)])  # per-class thresholds
        above = p >= t[None]
        cand = np.where(above, p, -1)
        star = cand.argmax(-1)
        has = above.any(-1)
        flag = has & (star != given)
        # a continuous score: how far the best other class clears its threshold vs how far the label clears its own
        other = np.where(np.eye(7, dtype=bool)[given], -np.inf, p - t[None]).max(-1)
        score = other - (p[ar, given] - t[given])
        n = flag.sum()
        prec = (flag & g["noisy"]).sum() / max(n, 1)
        rec = (flag & g["noisy"]).sum() / max(g["noisy"].sum(), 1)
        hs = [
            (flag & g[r]).sum() / max(g[r].sum(), 1)
            for r in ("hard", "intensity", "short_apex", "distractor", "easy")
        ]
        rel = (star[flag] == true[flag]).mean() if n else float("nan")
        a1 = auroc(score, g["noisy"], g["clean"]) if g["noisy"].any() else float("nan")
        a2 = auroc(score, g["noisy"], g["hard"]) if g["noisy"].any() else float("nan")
        print(
            f"| {Path(run).name} | {e} | {n} | {n / len(given):.2f} | {prec:.2f} | {rec:.2f} | "
            + " | ".join(f"{100 * h:.0f}%" for h in hs)
            + f" | {rel:.2f} | {a1:.3f} / {a2:.3f} |"
        )

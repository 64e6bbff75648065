"""Offline: drop the top-q of the cumulative loss, q = Confident Learning's noise-share estimate (or fixed),
at epoch e (not for merging). python probe/rank_drop.py ROOT EPOCHS RUN..."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import groups, softmax  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

root, epochs, runs = Path(sys.argv[1]), [int(e) for e in sys.argv[2].split(",")], sys.argv[3:]
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
print(
    "| run | epoch | q | dropped | precision | recall | hard dropped | intensity | short_apex | distractor | easy dropped |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    d = dict(np.load(Path(run) / "probe.npz"))
    given, true = d["given"], d["true"]
    g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
    ar = np.arange(len(given))
    for e in epochs:
        pe = softmax(d["video"][:e].astype(np.float32))
        p = pe.mean(0)
        loss = -np.log(np.clip(pe[:, ar, given], 1e-12, 1)).mean(0)
        t = np.array([p[given == j, j].mean() for j in range(7)])
        above = p >= t[None]
        star = np.where(above, p, -1).argmax(-1)
        q_cl = float((above.any(-1) & (star != given)).mean())
        for name, q in (("CL", q_cl), ("CL/2", q_cl / 2)):
            k = int(round(q * len(given)))
            drop = np.zeros(len(given), bool)
            drop[np.argsort(-loss)[:k]] = True
            prec = (drop & g["noisy"]).sum() / max(k, 1)
            rec = (drop & g["noisy"]).sum() / max(g["noisy"].sum(), 1)
            hs = [
                (drop & g[r]).sum() / max(g[r].sum(), 1)
                for r in ("hard", "intensity", "short_apex", "distractor", "easy")
            ]
            print(
                f"| {Path(run).name} | {e} | {name}={q:.2f} | {k} | {prec:.2f} | {rec:.2f} | "
                + " | ".join(f"{100 * h:.0f}%" for h in hs)
                + " |"
            )

"""Two-stage rule table (not for merging): stage 1 = GMM on a cumulative score (since epoch 1), stage 2 variants
inside the suspects. python probe/rules.py ROOT EPOCHS RUN..."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import groups, per_epoch_scores  # noqa: E402
from sim_rule import gmm_suspect  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

root, epochs, runs = Path(sys.argv[1]), [int(e) for e in sys.argv[2].split(",")], sys.argv[3:]
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
print(
    "| run | epoch | stage 1 on | stage 2 | flagged | precision | recall | hard flagged | intensity | short_apex | distractor | easy flagged |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    d = dict(np.load(Path(run) / "probe.npz"))
    given, true = d["given"], d["true"]
    g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
    per = per_epoch_scores(d, given)
    for e in epochs:
        cum = {k: np.nanmean(v[:e], 0) for k, v in per.items()}
        for s1 in ("loss", "neg_margin_logit"):
            s, _ = gmm_suspect(cum[s1])
            variants = {
                "none": s,
                "det_oms>0": s & (cum["det_inst:other_minus_support"] > 0),
                "syn_oms>0.1": s & (cum["syn_inst:other_minus_support"] > 0.1),
                "maxp>=med(susp)": s & (cum["maxp"] >= np.median(cum["maxp"][s])),
            }
            for name, f in variants.items():
                n = f.sum()
                prec = (f & g["noisy"]).sum() / max(n, 1)
                rec = (f & g["noisy"]).sum() / max(g["noisy"].sum(), 1)
                hs = [
                    (f & g[r]).sum() / max(g[r].sum(), 1)
                    for r in ("hard", "intensity", "short_apex", "distractor", "easy")
                ]
                print(
                    f"| {Path(run).name} | {e} | {s1} | {name} | {n} | {prec:.2f} | {rec:.2f} | "
                    + " | ".join(f"{100 * h:.0f}%" for h in hs)
                    + " |"
                )

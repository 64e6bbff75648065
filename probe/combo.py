"""Overall AUROCs of combined scores and a stage-2 threshold sweep (not for merging).
python probe/combo.py RUN ROOT EPOCH_LO EPOCH_HI"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import auroc, groups, per_epoch_scores  # noqa: E402
from sim_rule import describe, gmm_suspect  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

run, root, lo, hi = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = dict(np.load(run / "probe.npz"))
given, true = d["given"], d["true"]
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
per = per_epoch_scores(d, given)
cum = {k: np.nanmean(v[lo - 1 : hi], 0) for k, v in per.items()}
z = lambda x: (x - x.mean()) / (x.std() + 1e-12)  # noqa: E731
combos = {
    "loss": cum["loss"],
    "margin": cum["neg_margin_logit"],
    "syn_oms": cum["syn_inst:other_minus_support"],
    "det_oms": cum["det_inst:other_minus_support"],
    "frames_oms": cum["frames:other_minus_support"],
    "loss+syn_oms": z(cum["loss"]) + z(cum["syn_inst:other_minus_support"]),
    "margin+syn_oms": z(cum["neg_margin_logit"]) + z(cum["syn_inst:other_minus_support"]),
    "loss+syn+det": z(cum["loss"])
    + z(cum["syn_inst:other_minus_support"])
    + z(cum["det_inst:other_minus_support"]),
    "loss+frames_oms": z(cum["loss"]) + z(cum["frames:other_minus_support"]),
    "margin+det_oms": z(cum["neg_margin_logit"]) + z(cum["det_inst:other_minus_support"]),
    "margin+clips_best": z(cum["neg_margin_logit"]) + z(cum["clips:neg_best_view_support"]),
    "margin+frames_best": z(cum["neg_margin_logit"]) + z(cum["frames:neg_best_view_support"]),
    "margin-0.5py_std": z(cum["neg_margin_logit"]) - 0.5 * z(np.nanstd(per["py"][lo - 1 : hi], 0)),
    "syn_oms+det_oms": z(cum["syn_inst:other_minus_support"]) + z(cum["det_inst:other_minus_support"]),
}
print(f"window {lo}-{hi}")
if g["noisy"].any():
    for k, v in combos.items():
        print(
            f"  {k:<18} vs_clean {auroc(v, g['noisy'], g['clean']):.3f} vs_hard {auroc(v, g['noisy'], g['hard']):.3f} "
            + " ".join(
                f"{r} {auroc(v, g['noisy'], g[r]):.3f}" for r in ("intensity", "short_apex", "distractor")
            )
        )
s, info = gmm_suspect(cum["loss"])
print("stage 1 (GMM on cum loss):", describe(s, g))
for key in (
    "syn_inst:other_minus_support",
    "det_inst:other_minus_support",
    "frames:other_minus_support",
    "syn_inst:vote_other",
):
    for tau in (-0.1, 0.0, 0.1, 0.2):
        f = s & (cum[key] > tau)
        print(f"  stage 2 {key} > {tau:+.1f}: {describe(f, g)}")

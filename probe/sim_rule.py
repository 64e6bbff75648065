"""Offline simulation of two-stage decision rules on a probe run (not for merging).

Stage 1 (clean vs suspect): a 2-component GMM on the cumulative mean per-sample loss (optionally z-scored per
given class) at the end of epoch e; suspect = posterior of the high-mean component > 0.5.
Stage 2 (noisy vs hard among suspects): AUROC of candidate scores inside the suspect set, and a few fixed rules.

python probe/sim_rule.py RUN ROOT [--from-epoch 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture

sys.path.insert(0, str(Path(__file__).parent))
from analyse import REASONS, auroc, class_norm, groups, per_epoch_scores  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402


def gmm_suspect(x: np.ndarray) -> tuple[np.ndarray, dict]:
    z = (x - x.min()) / max(x.max() - x.min(), 1e-12)
    g = GaussianMixture(2, max_iter=50, tol=1e-3, reg_covar=5e-4, random_state=0).fit(z[:, None])
    hi = int(np.argmax(g.means_.ravel()))
    post = g.predict_proba(z[:, None])[:, hi]
    mu = g.means_.ravel()
    sd = np.sqrt(g.covariances_.ravel())
    sep = abs(mu[1] - mu[0]) / (sd.sum() + 1e-12)  # bimodality: distance of the means in summed std
    return post > 0.5, {"sep": float(sep), "w_hi": float(g.weights_[hi])}


def describe(flag: np.ndarray, g: dict) -> str:
    n = max(flag.sum(), 1)
    prec = (flag & g["noisy"]).sum() / n
    rec = (flag & g["noisy"]).sum() / max(g["noisy"].sum(), 1)
    hard = {r: (flag & g[r]).sum() / max(g[r].sum(), 1) for r in ("hard", *REASONS)}
    return (
        f"n={flag.sum():4d} prec={prec:.2f} rec={rec:.2f} easy={((flag & g['easy']).sum() / max(g['easy'].sum(), 1)):.2f} "
        + " ".join(f"{k}={v:.2f}" for k, v in hard.items())
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("root", type=Path)
    ap.add_argument("--from-epoch", type=int, default=1)
    ap.add_argument("--classnorm", action="store_true")
    a = ap.parse_args()
    d = dict(np.load(a.run / "probe.npz"))
    e_done = int(d["epochs_done"])
    given, true = d["given"], d["true"]
    tk = {t.key: t for t in load_ground_truth(a.root) if t.split == "train"}
    g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
    for k in list(d):
        if isinstance(d[k], np.ndarray) and d[k].ndim >= 2 and d[k].shape[0] == d["loss"].shape[0]:
            d[k] = d[k][:e_done]
    per = per_epoch_scores(d, given)
    acc = (d["video"].astype(np.float32).argmax(-1) == given).mean(-1)
    stage2 = [
        "neg_margin_logit",
        "loss",
        "label_rank",
        "neg_resid_share",
        "det_inst:other_minus_support",
        "det_inst:vote_other",
        "syn_inst:other_minus_support",
        "frames:neg_best_view_support",
        "frames:other_minus_support",
        "clips:other_minus_support",
    ]
    for e in range(a.from_epoch, e_done + 1):
        lo = 0
        cum = {k: np.nanmean(per[k][lo:e], 0) for k in set(stage2) | {"loss", "py"}}
        cum["py_std"] = np.nanstd(per["py"][lo:e], 0)
        x = class_norm(cum["loss"], given) if a.classnorm else cum["loss"]
        s, info = gmm_suspect(x)
        line = f"ep {e:2d} train_acc {acc[e - 1]:.2f} sep {info['sep']:.2f} | suspects {describe(s, g)}"
        if g["noisy"].any() and (s & g["noisy"]).any() and (s & g["hard"]).any():
            inside = {k: auroc(cum[k], s & g["noisy"], s & g["hard"]) for k in stage2 + ["py_std"]}
            best = sorted(inside.items(), key=lambda kv: -kv[1])[:4]
            line += " | in-suspect noisy-vs-hard: " + ", ".join(f"{k} {v:.2f}" for k, v in best)
        print(line)


if __name__ == "__main__":
    main()

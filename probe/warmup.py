"""Warm-up signals per epoch (not for merging): running train accuracy on the given labels, GMM separation and
high-component weight of the cumulative loss, Jaccard of consecutive suspect sets, the suspects' precision and
the accuracy of relabelling suspects to the cumulative argmax. python probe/warmup.py RUN ROOT"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from analyse import auroc, groups, softmax  # noqa: E402
from sim_rule import gmm_suspect  # noqa: E402

from rdfer.data.synth import load_ground_truth  # noqa: E402

run, root = Path(sys.argv[1]), Path(sys.argv[2])
d = dict(np.load(run / "probe.npz"))
given, true = d["given"], d["true"]
E = int(d["epochs_done"])
tk = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
g = groups([tk[str(k)] for k in d["train_keys"]], given, true)
ar = np.arange(len(given))
pv = softmax(d["video"][:E].astype(np.float32))
loss = -np.log(np.clip(pv[:, ar, given], 1e-12, 1))
war = (d["test_logits"][:E].astype(np.float32).argmax(-1) == d["test_labels"]).mean(-1)
prev = None
for e in range(1, E + 1):
    cum = loss[:e].mean(0)
    s, info = gmm_suspect(cum)
    jac = (s & prev).sum() / max((s | prev).sum(), 1) if prev is not None else float("nan")
    prev = s
    acc = (pv[e - 1].argmax(-1) == given).mean()
    pred = pv[:e].mean(0).argmax(-1)
    rel = (pred[s] == true[s]).mean() if s.any() else float("nan")
    prec = (s & g["noisy"]).sum() / max(s.sum(), 1)
    a = auroc(cum, g["noisy"], g["clean"]) if g["noisy"].any() else float("nan")
    print(
        f"ep {e:2d} test {war[e - 1]:.3f} train_acc {acc:.3f} sep {info['sep']:.2f} w_hi {info['w_hi']:.2f} "
        f"suspects {s.sum():4d} jaccard {jac:.2f} prec {prec:.2f} relabel_acc {rel:.2f} cum_loss_auroc {a:.3f}"
    )

"""Offline (not for merging): per-epoch signals from a run's saved selector statistics (last.pt), against the
truth. python probe/phase2/signals.py RUN_DIR SETTING [noise_seed] [synth_seed]"""

import sys
from pathlib import Path

import numpy as np
import torch

from rdfer import checkpoint
from rdfer.config import load_config
from rdfer.data.prepare import load_splits
from rdfer.data.synth.noise import flip_labels
from rdfer.experiments.judge import true_categories
from rdfer.experiments.noise import SETTINGS, ground_truth
from rdfer.metrics import auroc
from rdfer.robust.confident import confident_off_diagonal
from rdfer.robust.gmm import gmm2
from rdfer.robust.stats import LOSS, MARGIN, PROBS, VIEW_OTHER, SampleStats

run, setting = Path(sys.argv[1]), sys.argv[2]
noise_seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
synth_seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
base = load_config("quick", ["data.synth_preset=noise", "data.image_size=32", "data.synth_noise=0",
                             f"data.synth_seed={synth_seed}"])
splits = load_splits(base.data, False)
true, hard, reasons = ground_truth(base, splits[0])
kind, rate = SETTINGS[setting]
given = flip_labels(true, rate, kind, noise_seed)
truth = torch.as_tensor(true_categories(true, given, hard))
state = checkpoint.load(run / "last.pt")["selector"]
st = SampleStats(len(true))
st.load_state_dict(state["stats"])
noisy, cleanm, hardm = truth == 2, truth != 2, truth == 1


def a2(score):
    if not noisy.any():
        return "  -  /  -  "
    k1 = noisy | cleanm
    k2 = noisy | hardm
    return f"{auroc(score[k1], noisy[k1]):.3f}/{auroc(score[k2], noisy[k2]):.3f}"


def spearman(a, b):
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


print("ep | ep-loss | cum-loss | win3 | win5 | since4 | margin cum | view | rho(ep,ep-1) | rho(cum,cum-1) | CL share | "
      "gmm w_hi | gmm(win3) w_hi | trainacc")
prev_e = prev_c = None
for e in range(1, st.epochs + 1):
    ep = st.mean(e - 1, e)
    cum = st.mean(0, e)
    w3 = st.mean(max(0, e - 3), e)
    w5 = st.mean(max(0, e - 5), e)
    s4 = st.mean(min(3, e - 1), e)
    labels = st.labels
    cl = float(confident_off_diagonal(cum[:, PROBS:], labels).float().mean())
    g = gmm2(cum[:, LOSS]).weight_high
    g3 = gmm2(w3[:, LOSS]).weight_high
    r1 = spearman(ep[:, LOSS], prev_e) if prev_e is not None else float("nan")
    r2 = spearman(cum[:, LOSS], prev_c) if prev_c is not None else float("nan")
    prev_e, prev_c = ep[:, LOSS], cum[:, LOSS]
    acc = 1 - float(ep[:, 2].mean())
    print(f"{e:2d} | {a2(ep[:, LOSS])} | {a2(cum[:, LOSS])} | {a2(w3[:, LOSS])} | {a2(w5[:, LOSS])} | "
          f"{a2(s4[:, LOSS])} | {a2(-cum[:, MARGIN])} | {a2(cum[:, VIEW_OTHER])} | {r1:.3f} | {r2:.3f} | {cl:.3f} | "
          f"{g:.3f} | {g3:.3f} | {acc:.3f}")

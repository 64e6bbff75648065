"""Offline analysis of probe_train.py's .npz (not for merging): AUROC of candidate scores for truly noisy vs
clean and truly noisy vs truly hard (overall and per hard reason), per epoch and accumulated over windows.

python probe/analyse.py RUN_DIR ROOT [--md OUT.md] [--json OUT.json]
Scores are oriented so that high = "looks noisy". Positive class: truly noisy (given != true).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from rdfer.data.synth import load_ground_truth

REASONS = ("intensity", "short_apex", "distractor")
VIEWS = {
    "det_inst": "detail_instance",
    "syn_inst": "synopsis_instance",
    "frames": "frame_head",
    "clips": "clip_head",
}


def auroc(score: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    ok = np.isfinite(score)
    pos, neg = pos & ok, neg & ok
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    r = rankdata(np.concatenate([score[pos], score[neg]]))
    n1, n0 = int(pos.sum()), int(neg.sum())
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def onehot(y: np.ndarray, c: int = 7) -> np.ndarray:
    return np.eye(c, dtype=bool)[y]


def per_epoch_scores(d: dict, given: np.ndarray) -> dict[str, np.ndarray]:
    """[E, N] scores per epoch, high = noisy-looking."""
    yh = onehot(given)  # [N, C]
    logits = d["video"].astype(np.float64)
    p = softmax(logits)
    py = p[:, yh]  # [E, N]
    other_logit = np.where(yh, -np.inf, logits).max(-1)
    out = {
        "loss": -np.log(np.clip(py, 1e-12, 1)),
        "neg_margin_logit": other_logit - logits[:, yh],  # -AUM term
        "neg_margin_prob": np.where(yh, -1, p).max(-1) - py,
        "wrong": (p.argmax(-1) != given).astype(np.float64),
        "maxp": p.max(-1),
        "label_rank": (p > py[..., None]).sum(-1).astype(np.float64),  # 0 = top
        "neg_resid_share": -py / np.clip(1 - np.where(yh, -1, p).max(-1), 1e-6, None),
        "py": py,
    }
    for short, key in VIEWS.items():
        pv = softmax(d[key])  # [E, N, V, C]
        m = pv.mean(2)  # [E, N, C]
        votes = np.zeros_like(m)
        am = pv.argmax(-1)  # [E, N, V]
        for c in range(7):
            votes[..., c] = (am == c).mean(-1)
        yv = yh[None]
        support = m[:, yh]  # mean_k p_k[y]
        other = np.where(yv, -1, m).max(-1)  # strongest other class, soft
        vote_other = np.where(yv, -1, votes).max(-1)  # share of votes for the most-voted other class
        ent = lambda q: -(q * np.log(np.clip(q, 1e-12, 1))).sum(-1)  # noqa: E731
        gjs = ent(m) - ent(pv).mean(-1)  # generalised JS divergence of the views (equal weights)
        label_any = np.take_along_axis(
            pv, np.broadcast_to(given[None, :, None, None], pv.shape[:3] + (1,)), -1
        )[..., 0].max(-1)  # best single view's p[y]
        out[f"{short}:neg_support"] = -support
        out[f"{short}:other_minus_support"] = other - support
        out[f"{short}:vote_other"] = vote_other
        out[f"{short}:vote_agree"] = votes.max(-1)  # A (hard agreement, any class)
        out[f"{short}:soft_agree"] = 1 - gjs / np.log(pv.shape[2])  # 1 - GJS / log K
        out[f"{short}:agree_other_strength"] = (votes.argmax(-1) != given) * votes.max(-1) * other
        out[f"{short}:neg_best_view_support"] = -label_any
        out[f"{short}:vote_label_lt_other"] = vote_other - votes[:, yh]
    return out


def window_mean(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.nanmean(x[lo:hi], 0)


def class_norm(score: np.ndarray, given: np.ndarray) -> np.ndarray:
    z = np.empty_like(score)
    for c in range(7):
        m = given == c
        z[m] = (score[m] - score[m].mean()) / (score[m].std() + 1e-12)
    return z


def groups(truth: list, given: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    noisy = given != true
    hard = np.array([t.is_hard for t in truth]) & ~noisy
    reason = np.array([t.hard_reason for t in truth])
    g = {"noisy": noisy, "clean": ~noisy, "hard": hard, "easy": ~noisy & ~hard}
    for r in REASONS:
        g[r] = hard & (reason == r)
    return g


def table(scores: dict[str, np.ndarray], g: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    res = {}
    for name, s in scores.items():
        row = {
            "vs_clean": auroc(s, g["noisy"], g["clean"]),
            "vs_hard": auroc(s, g["noisy"], g["hard"]),
            "vs_easy": auroc(s, g["noisy"], g["easy"]),
        }
        for r in REASONS:
            row[f"vs_{r}"] = auroc(s, g["noisy"], g[r])
        res[name] = row
    return res


def analyse(run: Path, root: Path) -> dict:
    d = dict(np.load(run / "probe.npz"))
    e_done = int(d["epochs_done"])
    given, true = d["given"], d["true"]
    truth_by_key = {t.key: t for t in load_ground_truth(root) if t.split == "train"}
    truth = [truth_by_key[str(k)] for k in d["train_keys"]]
    g = groups(truth, given, true)
    for k in list(d):
        if isinstance(d[k], np.ndarray) and d[k].ndim >= 2 and d[k].shape[0] == d["loss"].shape[0]:
            d[k] = d[k][:e_done]
    per = per_epoch_scores(d, given)
    test_war = (d["test_logits"][:e_done].astype(np.float32).argmax(-1) == d["test_labels"]).mean(-1)
    out = {
        "run": str(run),
        "epochs": e_done,
        "test_war": test_war.tolist(),
        "counts": {k: int(v.sum()) for k, v in g.items()},
        "per_epoch": {},
        "windows": {},
    }
    focus = ["loss", "neg_margin_logit", "wrong", "maxp", "label_rank", "neg_resid_share"]
    focus += [k for k in per if ":" in k]
    if g["noisy"].sum() == 0:
        return out
    for e in range(e_done):
        out["per_epoch"][e + 1] = table({k: per[k][e] for k in focus}, g)
    for lo, hi in [(0, h) for h in range(1, e_done + 1)] + [(a, a + 3) for a in range(0, e_done - 2)]:
        sc = {k: window_mean(per[k], lo, hi) for k in focus}
        sc["py_std"] = np.nanstd(per["py"][lo:hi], 0)
        sc.update(
            {
                f"{k}|cls": class_norm(v, given)
                for k, v in list(sc.items())
                if k in ("loss", "neg_margin_logit")
            }
        )
        out["windows"][f"{lo + 1}-{hi}"] = table(sc, g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("root", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    res = analyse(a.run, a.root)
    if a.json:
        a.json.write_text(json.dumps(res))
    print("test WAR per epoch:", " ".join(f"{100 * w:.1f}" for w in res["test_war"]))
    print("counts:", res["counts"])


if __name__ == "__main__":
    main()

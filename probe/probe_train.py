"""Instrumented training probe (not for merging): trains RDFER on clean SynthDFER with labels flipped in memory
and logs, per training sample and epoch, everything a noise/hard selector could read, to one .npz.

Variants (the network and loss pieces are the package's; the extra heads are the probe's):
  today: the package's loss (instance weight as configured); two linear probe heads read DETACHED features
         (per synopsis frame and per detail clip, before the LSTMs), so they observe without changing training.
  views: instance_weight=1 and the same two heads trained with gradient into the encoders (weight --head-weight
         each): detail clips and synopsis frames trained as classifiers of their own.
Methods: ce (every weight 1); oracle (weight 0 on the truly noisy); small_loss (after --warmup epochs, a
2-component GMM on last epoch's per-sample loss keeps the low-loss component, weight 1 else 0); small_loss_cum
(the same on the per-sample loss averaged over every epoch so far). Weights are
renormalised per batch (sum w * l / sum w).

Logged per epoch e and training sample i (training-time forward, i.e. augmented, random synopsis offsets, the
weights before the step): logits of video / detail video / synopsis video, detail instance [K], synopsis
instance [Ls], frame head [Ls], clip head [K]; key positions [K]; synopsis indices [Ls]; weight; loss. Per step:
mean loss, lr. Per epoch: test logits, WAR, seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rdfer import runtime
from rdfer.config import load_config
from rdfer.data.loader import set_loader_epoch
from rdfer.data.prepare import build_loader, load_splits
from rdfer.data.synth import load_ground_truth
from rdfer.data.synth.noise import flip_labels
from rdfer.experiments.noise import SETTINGS, noisy_split
from rdfer.models import RDFER
from rdfer.models.rdfer_net import synopsis_indices
from rdfer.ops.resample import clip_indices, key_positions
from rdfer.robust.loss import weighted_ce
from rdfer.train import lr_lambda, param_groups


class ProbeRDFER(RDFER):
    """RDFER plus linear heads on the per-frame synopsis features and the per-clip detail features."""

    def __init__(self, cfg, num_classes, num_frames, detach_heads: bool):
        super().__init__(cfg, num_classes, num_frames)
        d = cfg.feature_dim
        self.frame_head = nn.Linear(d, num_classes)
        self.clip_head = nn.Linear(d, num_classes)
        self.detach_heads = detach_heads

    def forward(self, frames, generator=None):  # RDFER.forward (learned positions off) + the heads
        b, t = frames.shape[:2]
        c = self.config
        syn_idx = synopsis_indices(b, t, c.synopsis_frames, self.training, generator).to(frames.device)
        syn_feats = self._encode(self.synopsis_encoder, frames, syn_idx.unsqueeze(1), group=4)[:, 0]
        syn_inst, syn_video, syn_bag = self.synopsis(syn_feats)
        with torch.no_grad():
            keys, _ = key_positions(syn_inst.detach().float().softmax(-1), c.clips, t)
            keys = keys.sort(dim=1, stable=True).values
        strides = torch.full_like(keys, c.stride)
        det_idx = clip_indices(keys, strides, c.clip_length, t)
        det_feats = self._encode(self.detail_encoder, frames, det_idx, group=c.clip_length).mean(dim=2)
        gate = torch.sigmoid(self.channel_attention(syn_bag))
        det_inst, det_video, _ = self.detail(det_feats, channel_attention=gate)
        logits = det_video if c.output == "detail" else 0.5 * (det_video + syn_video)
        sf, df = (syn_feats.detach(), det_feats.detach()) if self.detach_heads else (syn_feats, det_feats)
        return dict(
            logits=logits,
            detail_video_logits=det_video,
            synopsis_video_logits=syn_video,
            detail_instance_logits=det_inst,
            synopsis_instance_logits=syn_inst,
            key_positions=keys,
            synopsis_indices=syn_idx,
            frame_logits=self.frame_head(sf),
            clip_logits=self.clip_head(df),
        )


def gmm_suspects(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """2-component GMM on min-max-normalised x; suspect = posterior of the high-mean component > 0.5."""
    from sklearn.mixture import GaussianMixture

    x = np.where(np.isnan(x), np.nanmedian(x), x)  # never-seen samples (drop_last) sit in the middle
    z = (x - x.min()) / max(x.max() - x.min(), 1e-12)
    g = GaussianMixture(2, max_iter=50, tol=1e-3, reg_covar=5e-4, random_state=0).fit(z[:, None])
    hi = int(np.argmax(g.means_.ravel()))
    return g.predict_proba(z[:, None])[:, hi] > 0.5, {"w_hi": float(g.weights_[hi])}


def other_minus_support(logits: np.ndarray, given: np.ndarray) -> np.ndarray:
    """[N, K, C] view logits -> [N]: mean-over-views probability of the strongest other class minus the label's."""
    p = torch.as_tensor(logits.astype(np.float32)).softmax(-1).mean(1).numpy()
    yh = np.eye(p.shape[-1], dtype=bool)[given]
    return np.where(yh, -1, p).max(-1) - p[yh]


def gmm_clean_weights(loss: np.ndarray) -> tuple[np.ndarray, dict]:
    """DivideMix's selection: 2-component GMM on min-max-normalised losses; clean = posterior of the
    low-mean component > 0.5."""
    from sklearn.mixture import GaussianMixture

    x = (loss - loss.min()) / max(loss.max() - loss.min(), 1e-12)
    g = GaussianMixture(2, max_iter=20, tol=1e-2, reg_covar=5e-4, random_state=0).fit(x[:, None])
    clean = int(np.argmin(g.means_.ravel()))
    p = g.predict_proba(x[:, None])[:, clean]
    return (p > 0.5).astype(np.float32), {
        "gmm_means": g.means_.ravel().tolist(),
        "kept": float((p > 0.5).mean()),
    }


def selector_weights(epoch, loss_log, oms_log, weights, state, info):
    """The proposed two-stage rule, decided at the start of `epoch` from the logs of the epochs before it.
    Warm-up: ends at the first epoch whose GMM on the cumulative loss has a minority high component
    (w_hi < 0.5) and a suspect set stable against the previous epoch's (Jaccard >= 0.8). After it: the
    statistic is the mean loss since 3 epochs before the warm-up end; stage 1 = GMM suspects (no action if
    over half the data); stage 2 = noisy if the detail instances give another class more probability than
    the label on average over the same window, hard otherwise. Weights: noisy 0, else 1."""
    if state["warm_end"] is None:
        s, gi = gmm_suspects(np.nanmean(loss_log[:epoch], 0))
        prev = state["suspects"]
        jac = (s & prev).sum() / max((s | prev).sum(), 1) if prev is not None else 0.0
        state["suspects"] = s
        info.update(w_hi=gi["w_hi"], jaccard=float(jac))
        if gi["w_hi"] < 0.5 and jac >= 0.8:
            state["warm_end"] = epoch
        else:
            return weights, state
    lo = max(state["warm_end"] - 3, 0)
    s, gi = gmm_suspects(np.nanmean(loss_log[lo:epoch], 0))
    info.update(warm_end=state["warm_end"], w_hi=gi["w_hi"])
    if s.mean() > 0.5:
        info["guard"] = "over half suspect: previous weights kept"
        return weights, state
    state["suspects"] = s
    noisy = s & (np.nan_to_num(np.nanmean(oms_log[lo:epoch], 0), nan=-1.0) > 0)
    return torch.as_tensor((~noisy).astype(np.float32)), state


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--setting", default="symmetric-40", choices=list(SETTINGS))
    ap.add_argument("--variant", default="today", choices=["today", "views"])
    ap.add_argument(
        "--method", default="ce", choices=["ce", "oracle", "small_loss", "small_loss_cum", "selector"]
    )
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--warmup", type=int, default=4, help="small_loss: epochs of plain CE first")
    ap.add_argument("--head-weight", type=float, default=0.5)
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    over = [
        "data.image_size=32",
        "data.cache_frames=true",
        f"data.root={a.root}",
        f"optim.epochs={a.epochs}",
        *(["optim.instance_weight=1"] if a.variant == "views" else []),
        *a.overrides,
    ]
    cfg = load_config("quick", over)
    runtime.seed_everything(cfg.run.seed)
    train_split, test_split = load_splits(cfg.data, progress=False)
    truths = {t.key: t for t in load_ground_truth(a.root) if t.split == "train"}
    true = np.array([truths[r.key].true_index for r in train_split.records])
    kind, rate = SETTINGS[a.setting]
    given = flip_labels(true, rate, kind, a.noise_seed)
    labelled = noisy_split(train_split, given)
    is_noisy = torch.as_tensor(given != true)
    n, nt, C = len(labelled), len(test_split), 7
    dev = torch.device("cpu")

    model = ProbeRDFER(cfg.model, C, cfg.data.num_frames, detach_heads=a.variant == "today")
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    bs = cfg.data.batch_size
    steps = n // bs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps))
    aug = {"scale": (cfg.data.crop_scale, 1.0), "jitter": cfg.data.color_jitter}
    tl = build_loader(
        labelled,
        cfg.data,
        train=True,
        batch_size=bs,
        seed=cfg.run.seed,
        device=dev,
        augment=aug,
        progress=False,
    )
    vl = build_loader(
        test_split, cfg.data, train=False, batch_size=64, seed=cfg.run.seed, device=dev, progress=False
    )
    E, K, Ls = a.epochs, cfg.model.clips, cfg.model.synopsis_frames
    shapes = dict(
        video=(C,),
        detail_video=(C,),
        synopsis_video=(C,),
        detail_instance=(K, C),
        synopsis_instance=(Ls, C),
        frame_head=(Ls, C),
        clip_head=(K, C),
    )
    rec = {k: np.full((E, n, *s), np.nan, np.float16) for k, s in shapes.items()}
    keys_log = np.full((E, n, K), -1, np.int16)
    syn_log = np.full((E, n, Ls), -1, np.int16)
    w_log = np.full((E, n), np.nan, np.float32)
    loss_log = np.full((E, n), np.nan, np.float32)
    test_logits = np.zeros((E, nt, C), np.float16)
    step_loss, step_lr, epochs_info = [], [], []
    weights = torch.ones(n)
    oms_log = np.full((E, n), np.nan, np.float32)
    state = {"warm_end": None, "suspects": None}
    hard_np = np.array([truths[r.key].is_hard for r in train_split.records]) & (given == true)
    test_labels = torch.tensor([r.label for r in test_split.records])
    names = dict(
        video="logits",
        detail_video="detail_video_logits",
        synopsis_video="synopsis_video_logits",
        detail_instance="detail_instance_logits",
        synopsis_instance="synopsis_instance_logits",
        frame_head="frame_logits",
        clip_head="clip_logits",
    )
    ls, o = cfg.optim.label_smoothing, cfg.optim
    for epoch in range(E):
        t0 = time.perf_counter()
        info = {"epoch": epoch + 1}
        if a.method == "oracle":
            weights = (~is_noisy).float()
        elif a.method.startswith("small_loss") and epoch >= a.warmup:
            # small_loss: last epoch's loss (DivideMix); small_loss_cum: the mean over every epoch so far
            last = loss_log[epoch - 1] if a.method == "small_loss" else np.nanmean(loss_log[:epoch], 0)
            known = ~np.isnan(last)  # a sample the last epoch dropped (drop_last) keeps weight 1
            w = np.ones(n, np.float32)
            w[known], gi = gmm_clean_weights(last[known])
            weights = torch.as_tensor(w)
            info.update(gi, precision_clean=float((w > 0)[~is_noisy.numpy()].sum() / max((w > 0).sum(), 1)))
        elif a.method == "selector" and epoch >= 2:
            weights, state = selector_weights(epoch, loss_log, oms_log, weights, state, info)
            s_, nz = state["suspects"], weights.numpy() == 0
            noisy_np = is_noisy.numpy()
            info.update(
                noisy_flagged=int(nz.sum()),
                precision=float((nz & noisy_np).sum() / max(nz.sum(), 1)),
                recall=float((nz & noisy_np).sum() / max(noisy_np.sum(), 1)),
                hard_flagged=float((nz & hard_np).sum() / max(hard_np.sum(), 1)),
                suspects=int(s_.sum()) if s_ is not None else None,
            )
        model.train()
        set_loader_epoch(tl, epoch)
        for batch in tl:
            x, y, ids = batch["frames"], batch["label"], batch["sample_id"]
            res = model(x)
            w = weights[ids]
            factor = len(w) / w.sum().clamp(min=1e-6)  # per-batch renormalised
            wn = w * (factor.clamp(max=2.0) if a.method == "selector" else factor)
            parts = (
                weighted_ce(res["detail_video_logits"], y, wn, ls)
                + o.synopsis_weight * weighted_ce(res["synopsis_video_logits"], y, wn, ls)
                + o.instance_weight
                * 0.5
                * (
                    weighted_ce(res["synopsis_instance_logits"], y, wn, ls)
                    + weighted_ce(res["detail_instance_logits"], y, wn, ls)
                )
            )
            hw = a.head_weight if a.variant == "views" else 1.0  # detached heads: weight only scales their lr
            heads = hw * (
                weighted_ce(res["frame_logits"], y, wn, ls) + weighted_ce(res["clip_logits"], y, wn, ls)
            )
            loss = parts + heads
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                i = ids.numpy()
                for k, name in names.items():
                    rec[k][epoch, i] = res[name].float().numpy()
                keys_log[epoch, i] = res["key_positions"].numpy()
                syn_log[epoch, i] = res["synopsis_indices"].numpy()
                w_log[epoch, i] = w.numpy()
                loss_log[epoch, i] = F.cross_entropy(res["logits"].float(), y, reduction="none").numpy()
            step_loss.append(float(parts))
            step_lr.append(sched.get_last_lr()[0])
        oms_log[epoch] = other_minus_support(rec["detail_instance"][epoch], given)
        model.eval()
        with torch.no_grad():
            pos = 0
            for batch in vl:
                lg = model(batch["frames"])["logits"].float()
                test_logits[epoch, pos : pos + len(lg)] = lg.numpy()
                pos += len(lg)
        war = float((torch.as_tensor(test_logits[epoch]).float().argmax(-1) == test_labels).float().mean())
        seen = ~np.isnan(loss_log[epoch])
        info.update(
            test_war=war,
            seconds=time.perf_counter() - t0,
            train_acc_given=float((rec["video"][epoch][seen].argmax(-1) == given[seen]).mean()),
        )
        epochs_info.append(info)
        print(json.dumps(info), file=sys.stderr, flush=True)
        np.savez_compressed(
            out / "probe.npz",
            **rec,
            keys=keys_log,
            syn=syn_log,
            weight=w_log,
            loss=loss_log,
            test_logits=test_logits,
            test_labels=test_labels.numpy(),
            given=given,
            true=true,
            train_keys=np.array([r.key for r in labelled.records]),
            step_loss=np.array(step_loss),
            step_lr=np.array(step_lr),
            epochs_done=epoch + 1,
        )
        (out / "epochs.json").write_text(
            json.dumps({"args": vars(a), "config": cfg.to_dict(), "epochs": epochs_info}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

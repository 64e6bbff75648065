"""One architecture run's test numbers, from its last.pt: WAR/UAR overall and per clip kind, where its clips
landed (rdfer.experiments.positions), and why the key positions miss (the grid they are drawn from)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rdfer import checkpoint, runtime
from rdfer.config import Config, from_dict
from rdfer.data.prepare import build_loader
from rdfer.data.records import Split
from rdfer.data.synth import ClipTruth
from rdfer.experiments.positions import grid_hits, hit_rates
from rdfer.metrics import confusion_matrix, summarize
from rdfer.ops.resample import key_positions_reference

KINDS = ("easy", "intensity", "short_apex", "distractor")


def load_model(path: Path, build, device: torch.device):
    """The variant's model (`build(config, classes)`) with the checkpoint's weights, in eval mode."""
    state = checkpoint.load(path)
    model = build(from_dict(state["config"]), state["classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict(model, split: Split, cfg: Config, device: torch.device, progress: bool) -> dict[str, np.ndarray]:
    """Per test clip, in split order: the predicted class, the clip centres used [N, K] (when the model
    places clips) and the key positions with their classes [N, K] (when it has a synopsis stream)."""
    loader = build_loader(
        split, cfg.data, train=False, batch_size=cfg.data.batch_size, seed=cfg.run.seed, device=device,
        notice=False, progress=progress,
    )  # fmt: skip
    parts: dict[str, list] = {"ids": [], "pred": [], "centers": [], "keys": [], "key_classes": []}
    for batch in loader:
        ids = batch["sample_id"].to(device)
        with runtime.autocast(device, cfg.run):
            out = model(batch["frames"].to(device), sample_ids=ids)
        parts["ids"].append(ids.cpu())
        parts["pred"].append(out["logits"].argmax(-1).cpu())
        if "clip_centers" in out:
            parts["centers"].append(out["clip_centers"].float().cpu())
        if "key_positions" in out:
            probs = out["synopsis_instance_logits"].float().softmax(-1)
            keys, classes = key_positions_reference(probs, out["key_positions"].shape[1], cfg.data.num_frames)
            parts["keys"].append(keys.cpu())
            parts["key_classes"].append(classes.cpu())
    order = torch.cat(parts["ids"]).argsort()  # back to split order, whatever the loader's
    return {k: torch.cat(v)[order].numpy() for k, v in parts.items() if v}


def evaluate_run(cfg: Config, path: Path, build, split: Split, rows: list[ClipTruth], progress: bool) -> dict:
    """{"test": WAR/UAR and WAR by kind, "hit_rate", "positions": the hit details} of one finished run."""
    device = torch.device("cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu")
    got = predict(load_model(path, build, device), split, cfg, device, progress)
    labels = np.array([r.label for r in split.records])
    metrics = confusion_matrix(torch.as_tensor(got["pred"]), torch.as_tensor(labels), len(split.classes))
    metrics = summarize(metrics, split.classes)
    kinds = np.array([r.hard_reason or "easy" for r in rows])
    right = got["pred"] == labels
    test = {
        "war": metrics["war"],
        "uar": metrics["uar"],
        "by_kind": {k: float(right[kinds == k].mean()) if (kinds == k).any() else None for k in KINDS},
    }
    t = cfg.data.num_frames
    short = [r for r in rows if r.hard_reason == "short_apex"]
    positions = {"grid_ceiling": grid_hits(short, cfg.model.synopsis_frames, t)}
    hit = None
    if "centers" in got:
        keyed = cfg.model.detail_clips == "key" and "keys" in got and _is_key_placed(got)
        centers = got["keys"] if keyed else got["centers"]
        hit, details = hit_rates(rows, centers, got["key_classes"] if keyed else None, t)
        positions |= details
    if "keys" in got:  # where the key positions point, whether or not clips go there
        positions["keys_apex"] = hit_rates(rows, got["keys"], got["key_classes"], t)[0]["apex"]
    return {"test": test, "hit_rate": hit, "positions": positions}


def _is_key_placed(got: dict) -> bool:
    """The clips went to the key positions (not an oracle's): the same centres, in time order."""
    return bool(np.allclose(np.sort(got["keys"], axis=1), got["centers"]))

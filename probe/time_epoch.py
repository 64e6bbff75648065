"""Where an epoch's time goes at 32x32: frame cache fill, loader alone, model step alone, eval, together.
Usage: time_epoch.py ROOT [overrides...]  (ROOT: a SynthDFER folder)."""

import sys
import time

import torch

from rdfer.config import load_config
from rdfer.data.loader import set_loader_epoch
from rdfer.data.prepare import build_loader, load_splits
from rdfer.models import RDFER
from rdfer.robust.loss import rdfer_loss
from rdfer.train import param_groups

root = sys.argv[1]
cfg = load_config(
    "quick", ["data.image_size=32", "data.cache_frames=true", f"data.root={root}", *sys.argv[2:]]
)
train, test = load_splits(cfg.data, progress=False)
dev = torch.device("cpu")
t = time.perf_counter()
loader = build_loader(
    train,
    cfg.data,
    train=True,
    batch_size=cfg.data.batch_size,
    seed=0,
    device=dev,
    augment={"scale": (cfg.data.crop_scale, 1.0), "jitter": cfg.data.color_jitter},
    progress=False,
)
print(f"cache fill train ({len(train)} clips): {time.perf_counter() - t:.1f}s", flush=True)
t = time.perf_counter()
tl = build_loader(
    test, cfg.data, train=False, batch_size=cfg.data.batch_size, seed=0, device=dev, progress=False
)
print(f"cache fill test ({len(test)} clips): {time.perf_counter() - t:.1f}s", flush=True)
set_loader_epoch(loader, 0)
t = time.perf_counter()
batches = [b for b in loader]
tload = time.perf_counter() - t
print(f"loader alone, one train epoch ({len(batches)} batches): {tload:.1f}s", flush=True)
model = RDFER(cfg.model, 7, cfg.data.num_frames)
opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-3)
model.train()
t = time.perf_counter()
for b in batches:
    out = model(b["frames"])
    loss, _ = rdfer_loss(out, b["label"], torch.ones(len(b["label"])), cfg.optim, cfg.data.num_frames)
    opt.zero_grad()
    loss.backward()
    opt.step()
tmodel = time.perf_counter() - t
print(f"model step alone over those batches: {tmodel:.1f}s", flush=True)
model.eval()
t = time.perf_counter()
with torch.no_grad():
    for b in tl:
        model(b["frames"])
print(f"eval (loader+forward) test: {time.perf_counter() - t:.1f}s", flush=True)
model.train()
set_loader_epoch(loader, 1)
t = time.perf_counter()
for b in loader:
    out = model(b["frames"])
    loss, _ = rdfer_loss(out, b["label"], torch.ones(len(b["label"])), cfg.optim, cfg.data.num_frames)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"train epoch loader+model: {time.perf_counter() - t:.1f}s", flush=True)

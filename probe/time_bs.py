"""Per-sample time of a training step (1 torch thread) vs batch size, and of an eval forward."""

import time

import torch

from rdfer.config import load_config
from rdfer.models import RDFER
from rdfer.robust.loss import rdfer_loss

torch.set_num_threads(1)
cfg = load_config("quick", ["data.image_size=32"])
model = RDFER(cfg.model, 7, 32)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for bs in (16, 32, 64):
    x = torch.randint(0, 255, (bs, 32, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 7, (bs,))

    def step():
        out = model(x)
        loss, _ = rdfer_loss(out, y, torch.ones(bs), cfg.optim, 32)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(4):
        step()
    dt = (time.perf_counter() - t) / 4
    with torch.no_grad():
        model.eval()
        t = time.perf_counter()
        for _ in range(4):
            model(x)
        de = (time.perf_counter() - t) / 4
        model.train()
    print(
        f"batch {bs}: {dt * 1000:.0f} ms/step = {dt / bs * 1000:.1f} ms/sample; eval {de / bs * 1000:.1f} ms/sample",
        flush=True,
    )

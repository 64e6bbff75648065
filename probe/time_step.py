"""One model step's time at 32x32, batch 16, with 1 and 2 torch threads; torch profiler top ops."""

import sys
import time

import torch

from rdfer.config import load_config
from rdfer.models import RDFER
from rdfer.robust.loss import rdfer_loss

cfg = load_config("quick", ["data.image_size=32"])
model = RDFER(cfg.model, 7, 32)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randint(0, 255, (16, 32, 3, 32, 32), dtype=torch.uint8)
y = torch.randint(0, 7, (16,))


def step():
    out = model(x)
    loss, _ = rdfer_loss(out, y, torch.ones(16), cfg.optim, 32)
    opt.zero_grad()
    loss.backward()
    opt.step()


for th in (int(a) for a in sys.argv[1:]):
    torch.set_num_threads(th)
    step()
    t = time.perf_counter()
    for _ in range(5):
        step()
    print(f"threads {th}: {(time.perf_counter() - t) / 5 * 1000:.0f} ms/step", flush=True)
from torch.profiler import profile

with profile() as p:
    for _ in range(3):
        step()
print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25))

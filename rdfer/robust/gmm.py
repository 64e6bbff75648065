"""A two-component 1-D Gaussian mixture fitted by EM: the small-loss split of the per-sample loss (DivideMix's
selection step, docs/method.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Mixture:
    high: Tensor  # [n] posterior of the high-mean component
    weight_high: float  # its mixing weight
    means: tuple[float, float]  # (low, high)


@torch.no_grad()
def gmm2(x: Tensor, iters: int = 100, tol: float = 1e-6) -> Mixture:
    """Fit two Gaussians to the values x [n] (float64 inside), started at the 25th and 75th percentiles with
    the pooled variance; each variance is floored at 1e-4 of the data's so a tight cluster cannot absorb the
    likelihood. Ties and n < 2 give a single component (posterior 0)."""
    x = x.double().flatten()
    n = x.numel()
    spread = x.var() if n > 1 else x.new_zeros(())
    if n < 2 or float(spread) == 0.0:
        return Mixture(torch.zeros_like(x), 0.0, (float(x.mean()) if n else 0.0,) * 2)
    floor = 1e-4 * spread
    mu = torch.quantile(x, x.new_tensor([0.25, 0.75]))
    var = spread.expand(2).clone()
    pi = x.new_tensor([0.5, 0.5])
    previous = -float("inf")
    for _ in range(iters):
        log_p = -0.5 * ((x[:, None] - mu) ** 2 / var + var.log()) + pi.log()  # [n, 2] (+ constant)
        total = torch.logsumexp(log_p, 1, keepdim=True)
        resp = (log_p - total).exp()
        nk = resp.sum(0).clamp(min=1e-12)
        pi, mu = nk / n, (resp * x[:, None]).sum(0) / nk
        var = ((resp * (x[:, None] - mu) ** 2).sum(0) / nk).clamp(min=floor)
        likelihood = float(total.mean())
        if likelihood - previous < tol:
            break
        previous = likelihood
    hi = int(mu.argmax())
    return Mixture(resp[:, hi].float(), float(pi[hi]), (float(mu[1 - hi]), float(mu[hi])))

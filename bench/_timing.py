"""What every rdfer benchmark shares: timed rounds of several calls, and a summary printed after pytest's own
output (outside output capture), so the ratios measured in one run are read together."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def rounds(fn: Callable[[], object], inner: int) -> Callable[[], None]:
    """One timed round: `inner` calls, then one device synchronisation (kept out of sub-ms timings)."""

    def run() -> None:
        for _ in range(inner):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return run


def write_after_run(request, lines: list[str]) -> None:
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or not lines:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        for line in ["", *lines]:
            reporter.write_line(line)


def kernel_summary(what: str, seconds: dict, nbytes: dict, inner: int, ms: bool) -> list[str]:
    """A title (`what` on the device), then one line per case: each implementation's time per call and
    bandwidth, then the kernel's speed-up over eager and compiled PyTorch; nothing when nothing was timed.
    seconds[case][impl] is one timed round of `inner` calls; nbytes[case] the bytes a call moves; `ms` prints
    milliseconds (else microseconds)."""
    if not seconds:
        return []
    scale, unit = (1e3, "ms") if ms else (1e6, "us")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    name = gpu or "CPU (Triton interpreter: not a kernel timing)"
    lines = [f"{what} on {name}: {unit} per call, GB/s, kernel speed-up"]
    for case, by_impl in seconds.items():
        line = f"  {case!s:<22}" + "".join(
            f" {impl} {s / inner * scale:9.3f} {unit} {nbytes[case] / s / 1e9:7.2f} GB/s"
            for impl, s in by_impl.items()
        )
        if "kernel" in by_impl:
            line += "".join(
                f" | x{by_impl[ref] / by_impl['kernel']:.2f} vs {ref}"
                for ref in ("eager", "compile")
                if ref in by_impl
            )
        lines.append(line)
    return lines

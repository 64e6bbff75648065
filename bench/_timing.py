"""What every rdfer benchmark shares: timed rounds of several calls, and a summary printed after pytest's own
output (outside output capture), so the ratios measured in one run are read together."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def rounds(fn: Callable[[], object], inner: int) -> Callable[[], None]:
    """One timed round: `inner` calls, then one device synchronisation, kept out of sub-millisecond timings."""

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

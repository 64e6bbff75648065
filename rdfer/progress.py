"""Progress of a long step where a person waits: a tqdm bar in a terminal; elsewhere (a log file, a job
scheduler) one plain line every RDFER_LOG_SECONDS seconds (default 60), as the training loop's heartbeat, so a
log shows that the step is moving without a carriage-return bar smeared over it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm


class LogLines:
    """The part of tqdm's interface the package uses (iteration, update, close, `with`), writing a line
    `desc: n/total (elapsed s)` at most every `every` seconds to stderr."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, every: float):
        self.iterable, self.total, self.desc, self.every = iterable, total, desc, every
        self.n, self.t0 = 0, time.perf_counter()
        self.last = self.t0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            of = f"/{self.total}" if self.total is not None else ""
            print(f"{self.desc}: {self.n}{of} ({now - self.t0:.0f}s)", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()

    def close(self) -> None:
        pass

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def progress_bar(
    iterable: Iterable | None = None, *, desc: str, enabled: bool, total: int | None = None, **kw
):
    """tqdm(iterable, desc=..., total=..., **kw) when `enabled` (a terminal), else LogLines."""
    if enabled:
        return tqdm(iterable, desc=desc, total=total, **kw)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return LogLines(iterable, total, desc, float(os.environ.get("RDFER_LOG_SECONDS", 60)))

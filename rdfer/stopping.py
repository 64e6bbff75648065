"""Ctrl-C (SIGINT) and SIGTERM, the signal a scheduler sends before it kills a job, end a command the same
way: `Stopped` (a KeyboardInterrupt) raised where the main thread is, a line on stderr, exit 130 or 143.

A section that must not be cut in two (an epoch's log and checkpoints, the summary, waiting for the checkpoint
writer) runs inside `deferred()`: a signal that lands there is held and raised when the section ends, so a
stop leaves every file of the run whole and in agreement. `requested` is set by either signal, at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

requested = threading.Event()
_state = {"depth": 0, "pending": None}
_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Stopped(KeyboardInterrupt):
    """A stop asked for by SIGINT or SIGTERM; exit_code is 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = _EXIT_CODES[signum]


def _handler(signum: int, _frame) -> None:
    requested.set()
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise Stopped(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise Stopped (or wait for the end of a deferred section) while inside; the
    previous handlers are put back on leaving. Outside the main thread (where Python cannot handle
    signals) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    requested.clear()
    _state["pending"] = None
    before = {s: signal.signal(s, _handler) for s in _EXIT_CODES}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal that lands inside until the section ends; then raise it (unless the section is
    already ending with an error of its own, which goes on instead)."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"] and _state["pending"] is not None:
        signum, _state["pending"] = _state["pending"], None
        raise Stopped(signum)


def uninterrupted(wait) -> None:
    """Call `wait()` (a blocking join) to the end even when a KeyboardInterrupt lands in it, then re-raise the
    interrupt: a default Ctrl-C handler (rdfer used as a library) must not leave a write half done."""
    interrupt = None
    while True:
        try:
            wait()
            break
        except KeyboardInterrupt as e:
            interrupt = e
    if interrupt is not None:
        raise interrupt

"""SIGINT and SIGTERM as a stop request that the demo's main loops poll.

The handler only counts: a handler that takes a lock, as ``threading.Event.set`` does,
deadlocks when the signal lands while the main thread holds that lock (inside
``Event.wait``). Counting also lets a second Ctrl-C mean "stop waiting".
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class StopRequest:
    """How many stop signals arrived; a signal handler, and what the main loops check."""

    def __init__(self) -> None:
        self.signals = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.signals += 1

    @property
    def requested(self) -> bool:
        return self.signals > 0


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``stop``, so shutdown never starts mid-statement.

    Signal handlers can only be set from the main thread, so callers must run there.
    """
    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, stop) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

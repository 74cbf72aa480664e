"""Keeping Python's cyclic garbage collector off the engine's long-lived records.

The engine holds hundreds of thousands of task records for a long time; each full
collection walks them all (about 150 ms at 100k tasks), and while the store grows
they happen again and again: a third of the consumer's time in a backlog drain.
Records die by reference counting, not in cycles, so once a second a young collection
runs and whatever is left is frozen (``gc.freeze``: never scanned again). A full one
(which walked the second's survivors, 4 % of a backlog drain) runs only every ten
minutes, after everything is unfrozen, so that any cyclic garbage frozen by mistake
(from libraries) is reclaimed.
"""

from __future__ import annotations

import gc


class FreezingGc:
    """Driven by the engine's tick (on the consumer thread)."""

    def __init__(self, freeze_every: float = 1.0, full_every: float = 600.0) -> None:
        self.freeze_every = freeze_every
        self.full_every = full_every
        self._frozen_at: float | None = None
        self._full_at: float | None = None

    def tick(self, now: float) -> None:
        if self._full_at is None:
            self._full_at = self._frozen_at = now
        full = now - self._full_at >= self.full_every
        if full:
            self._full_at = now
            gc.unfreeze()
        if full or now - self._frozen_at >= self.freeze_every:
            self._frozen_at = now
            gc.collect(2 if full else 1)
            gc.freeze()

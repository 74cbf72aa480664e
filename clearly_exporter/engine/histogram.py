"""A plain histogram the engine owns: observed on the hot path, rendered at scrape."""

from __future__ import annotations

from bisect import bisect_left

#: Task runtimes and waits span milliseconds to hours.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
#: Event lag is sub-second when healthy; minutes when the exporter falls behind.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Per-bucket (not cumulative) counts and a sum; bucket ``i`` holds v <= bounds[i]."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        other = Histogram(self.bounds)
        other.counts = self.counts.copy()
        other.total = self.total
        return other

    def cumulative(self) -> list[tuple[str, int]]:
        """Buckets as Prometheus wants them: cumulative, ending with ``+Inf``."""
        out = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)

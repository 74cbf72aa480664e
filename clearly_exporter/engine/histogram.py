"""A plain histogram the engine owns: observed on the hot path, rendered at scrape."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.samples import Exemplar

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

    __slots__ = ("bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        #: Per bucket, the last (trace id, value, timestamp) observed in it, if any.
        self.exemplars: list[Exemplar | None] | None = None

    def observe(self, value: float, trace: str | None = None, at: float | None = None) -> None:
        i = bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.total += value
        if trace is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[i] = Exemplar({"trace_id": trace}, value, at)

    def copy(self) -> Histogram:
        other = Histogram(self.bounds)
        other.counts = self.counts.copy()
        other.total = self.total
        if self.exemplars is not None:
            other.exemplars = self.exemplars.copy()
        return other

    def cumulative(self) -> list[tuple]:
        """Buckets as Prometheus wants them: cumulative, ending with ``+Inf``, exemplars on."""
        out: list[tuple] = []
        running = 0
        bounds = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        for i, (bound, count) in enumerate(zip(bounds, self.counts, strict=True)):
            running += count
            exemplar = self.exemplars[i] if self.exemplars is not None else None
            out.append((bound, running, exemplar) if exemplar else (bound, running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)

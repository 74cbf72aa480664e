"""A plain histogram the engine owns: observed on the hot path, rendered at scrape."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.samples import Exemplar

#: Task runtimes and waits span milliseconds to hours. Each bound is a line per series on
#: every scrape (five or more histogram series per task name and queue), so the bounds
#: are the ones a Celery operator reads: 10 ms (below it is Celery's own overhead), 100 ms
#: and 1 s (latency objectives), 10 s, 60 s (the queue-wait alert), 5 min (a usual soft
#: time limit), 15 min and 1 h (Redis's and SQS's visibility timeout: a task still unacknowledged
#: after it is delivered again), with steps of at most 5x between them.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Event lag is sub-second when healthy; minutes when the exporter falls behind.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_new = object.__new__


class Histogram:
    """Per-bucket (not cumulative) counts and a sum; bucket ``i`` holds v <= bounds[i].

    ``copy`` hands out one read-only copy until the next observation, so a scrape copies
    only the histograms that changed, and a renderer knows a series is unchanged when it
    gets the same copy as last time.
    """

    __slots__ = ("_copy", "bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        #: Per bucket, the last (trace id, value, timestamp) observed in it, if any.
        self.exemplars: list[Exemplar | None] | None = None
        self._copy: Histogram | None = None

    def observe(self, value: float, trace: str | None = None, at: float | None = None) -> bool:
        """Count ``value``; True if it is the first change since the last ``copy``."""
        i = bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.total += value
        copied = self._copy is not None
        self._copy = None
        if trace is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[i] = Exemplar({"trace_id": trace}, value, at)
        return copied

    def copy(self) -> Histogram:
        """A read-only copy, the same object until the next observation.

        Made without ``__init__`` (whose fresh counts would be thrown away): the scrape
        copies every changed histogram under the engine lock, half as long this way.
        """
        other = self._copy
        if other is None:
            other = self._copy = _new(Histogram)
            other.bounds = self.bounds
            other.counts = self.counts.copy()
            other.total = self.total
            exemplars = self.exemplars
            other.exemplars = None if exemplars is None else exemplars.copy()
            other._copy = None
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


class Histograms(dict):
    """A family's histograms by labels, and the copy of them a scrape takes.

    The copy is kept from one snapshot to the next, and only the histograms observed
    since are copied again: under a steady load about a tenth change between two
    scrapes, and copying all 20,000 walked memory out of cache under the engine lock
    (~17 ms a scrape). Histograms are only ever added, so the copy keeps their order.
    """

    __slots__ = ("_changed", "_copies", "bounds")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self.bounds = bounds
        self._copies: dict = {}
        #: (key, histogram) of those changed since the last snapshot, new ones included.
        self._changed: list[tuple] = []

    def observe(
        self, key: tuple, value: float, trace: str | None = None, at: float | None = None
    ) -> None:
        hist = self.get(key)
        if hist is None:
            hist = self[key] = Histogram(self.bounds)
            self._changed.append((key, hist))
        if hist.observe(value, trace, at):
            self._changed.append((key, hist))

    def snapshot(self) -> dict:
        """Every histogram's read-only copy, in their order; the same copy while unchanged."""
        copies = self._copies
        for key, hist in self._changed:
            copies[key] = hist.copy()
        self._changed.clear()
        return copies.copy()


def frozen(
    bounds: tuple[float, ...], counts: list[int], total: float, exemplars: list | None
) -> Histogram:
    """A read-only histogram of these values, like ``Histogram.copy``'s: how the render
    process gets the ones that changed (a tuple of its values pickles ~5x as fast)."""
    hist = _new(Histogram)
    hist.bounds, hist.counts, hist.total, hist.exemplars = bounds, counts, total, exemplars
    hist._copy = None
    return hist

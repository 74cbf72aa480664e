"""A plain histogram the engine owns: observed on the hot path, rendered at scrape."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, NamedTuple

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
#: An exemplar as the engine keeps it: trace id, value, timestamp. A plain tuple, not
#: prometheus_client's ``Exemplar`` (a dict of labels in a named tuple): a scrape pickles
#: every exemplar of each changed histogram under the engine lock, and plain tuples pickle
#: ~4 times as fast, and unpickle in the render process ~2.5 times as fast.
TraceExemplar = tuple[str, float, "float | None"]
#: A histogram as a scrape renders it: per-bucket counts, the sum, per-bucket exemplars
#: (None without). A plain tuple: made under the engine lock for each changed histogram
#: and pickled to the render process, both several times as fast as an object. Typed
#: as any tuple so that mypyc keeps it one object: unchanged is told by identity.
Frozen = tuple[Any, ...]
#: A table's place for a histogram about to be frozen.
EMPTY: Frozen = ([], 0.0, None)


class Histogram:
    """Per-bucket (not cumulative) counts and a sum; bucket ``i`` holds v <= bounds[i].

    ``freeze`` hands out one read-only copy of its values until the next observation, so a
    scrape copies only the histograms that changed, and a renderer knows a series is
    unchanged when it gets the same copy as last time.
    """

    __slots__ = ("_frozen", "bounds", "counts", "exemplars", "position", "total")

    def __init__(self, bounds: tuple[float, ...], position: int = -1) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        #: Per bucket, the last (trace id, value, timestamp) observed in it, if any.
        self.exemplars: list[TraceExemplar | None] | None = None
        #: Its place in its ``Histograms``, which renders by position.
        self.position = position
        self._frozen: Frozen | None = None

    def observe(self, value: float, trace: str | None = None, at: float | None = None) -> bool:
        """Count ``value``; True if it is the first change since the last ``freeze``."""
        i = bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.total += value
        frozen = self._frozen is not None
        self._frozen = None
        if trace is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[i] = (trace, value, at)
        return frozen

    def freeze(self) -> Frozen:
        """Its values as a read-only copy, the same tuple until the next observation."""
        frozen = self._frozen
        if frozen is None:
            exemplars = self.exemplars
            # ``tuple()`` makes it one object: mypyc keeps a tuple display unboxed and
            # boxes it anew wherever it goes.
            frozen = self._frozen = tuple(
                (
                    self.counts.copy(),
                    self.total,
                    None if exemplars is None else exemplars.copy(),
                )
            )
        return frozen


def cumulative(bounds: tuple[float, ...], frozen: Frozen) -> list[tuple]:
    """Buckets as prometheus_client wants them: cumulative, ending with ``+Inf``, with its
    ``Exemplar`` where there is one."""
    counts, _, exemplars = frozen
    out: list[tuple] = []
    running = 0
    names = [repr(float(b)) for b in bounds] + ["+Inf"]
    for i, (name, count) in enumerate(zip(names, counts, strict=True)):
        running += count
        exemplar = exemplars[i] if exemplars is not None else None
        if exemplar is None:
            out.append((name, running))
        else:
            trace, value, at = exemplar
            out.append((name, running, Exemplar({"trace_id": trace}, value, at)))
    return out


class Table(NamedTuple):
    """A family's histograms as a scrape takes them: keys and frozen values by position,
    the positions that changed since the table before, and which table this is."""

    keys: list[tuple]
    values: list[Frozen]
    changed: list[int]
    generation: int


class Histograms(dict):
    """A family's histograms by labels, and the tables of them scrapes take.

    Only the histograms observed since the table before are frozen again, and the table
    says which: under a steady load about a tenth change between two scrapes, and copying
    all 20,000 walked memory out of cache under the engine lock (~17 ms a scrape).
    Histograms are only ever added, so positions stay.
    """

    __slots__ = ("_changed", "_values", "bounds", "generation")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self.bounds = bounds
        #: Every histogram's frozen values as last taken, by position.
        self._values: list[Frozen] = []
        #: Those changed since the last table, new ones included; each once.
        self._changed: list[Histogram] = []
        self.generation = 0

    def observe(
        self, key: tuple, value: float, trace: str | None = None, at: float | None = None
    ) -> None:
        hist = self.get(key)
        if hist is None:
            hist = self[key] = Histogram(self.bounds, len(self))
            self._changed.append(hist)
        if hist.observe(value, trace, at):
            self._changed.append(hist)

    def table(self) -> Table:
        """Every histogram's frozen values, in their order, and which changed."""
        values = self._values
        values.extend([EMPTY] * (len(self) - len(values)))
        changed = []
        for hist in self._changed:
            values[hist.position] = hist.freeze()
            changed.append(hist.position)
        self._changed.clear()
        self.generation += 1
        return Table(list(self), values.copy(), changed, self.generation)

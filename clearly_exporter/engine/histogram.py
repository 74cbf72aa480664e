"""Histograms the engine owns: observed on the hot path, rendered at scrape."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, NamedTuple

from prometheus_client.samples import Exemplar

from clearly_exporter.engine.slab import Slab

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
#: each changed histogram's exemplars to the render process, and plain tuples pickle ~4
#: times as fast, and unpickle there ~2.5 times as fast.
TraceExemplar = tuple[str, float, "float | None"]
#: A histogram's values as one read: per-bucket counts, the sum, per-bucket exemplars
#: (None without).
Frozen = tuple[Any, ...]


class Histogram:
    """Per-bucket (not cumulative) counts and a sum; bucket ``i`` holds v <= bounds[i].

    The values live in a row of cells (``slab``): the counts, then the sum, written in
    place, so a scrape reads them where they are. Without a slab, in a row of its own.
    """

    __slots__ = ("bounds", "q", "d", "base", "exemplars", "position", "marked")

    def __init__(self, bounds: tuple[float, ...], slab: Slab | None = None, row: int = 0) -> None:
        self.bounds = bounds
        if slab is None:
            slab, row = Slab(len(bounds) + 2), 0
            slab.add()
        segment = slab.segment(row)
        self.q = segment.q
        self.d = segment.d
        #: Its first cell in ``q`` and ``d``: the counts, then the sum.
        self.base = slab.cell(row)
        #: Its place in its ``Histograms``, which renders by position.
        self.position = row
        #: Per bucket, the last (trace id, value, timestamp) observed in it, if any.
        self.exemplars: list[TraceExemplar | None] | None = None
        #: Its exemplars changed since its family's last ``take``.
        self.marked = False

    def observe(self, value: float, trace: str | None = None, at: float | None = None) -> bool:
        """Count ``value``; True if it brings the first exemplar since the last ``take``."""
        i = bisect_left(self.bounds, value)
        base = self.base
        self.q[base + i] += 1
        self.d[base + len(self.bounds) + 1] += value
        if trace is None:
            return False
        exemplars = self.exemplars
        if exemplars is None:
            exemplars = self.exemplars = [None] * (len(self.bounds) + 1)
        exemplars[i] = (trace, value, at)
        if self.marked:
            return False
        self.marked = True
        return True

    @property
    def counts(self) -> list[int]:
        base = self.base
        counts: list[int] = self.q[base : base + len(self.bounds) + 1].tolist()
        return counts

    @property
    def total(self) -> float:
        total: float = self.d[self.base + len(self.bounds) + 1]
        return total

    def freeze(self) -> Frozen:
        """Its values as a copy."""
        exemplars = self.exemplars
        return (self.counts, self.total, None if exemplars is None else exemplars.copy())


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
    """A family's histograms as a scrape takes them: their keys and rows by position, every
    one's exemplars (None: none yet), the positions whose exemplars changed since the
    table before, and which table this is."""

    keys: list[tuple]
    slab: Slab
    exemplars: list[list[TraceExemplar | None] | None]
    changed: list[int]
    generation: int


class Histograms(dict):
    """A family's histograms by labels, each a row of its ``slab``, in the order they came.

    Histograms are only ever added, so positions stay. Exemplars are Python objects, not
    cells: a table copies those changed since the table before (with tracing, about a
    tenth of the histograms between two scrapes).
    """

    __slots__ = ("_exemplars", "_marked", "bounds", "generation", "order", "slab")

    def __init__(self, bounds: tuple[float, ...], shared: bool = False) -> None:
        super().__init__()
        self.bounds = bounds
        self.slab = Slab(len(bounds) + 2, shared)
        #: The keys by position.
        self.order: list[tuple] = []
        #: Every histogram's exemplars as last taken, by position.
        self._exemplars: list[list[TraceExemplar | None] | None] = []
        #: Those whose exemplars changed since the last table; each once.
        self._marked: list[Histogram] = []
        self.generation = 0

    def observe(
        self, key: tuple, value: float, trace: str | None = None, at: float | None = None
    ) -> None:
        hist = self.get(key)
        if hist is None:
            hist = self[key] = Histogram(self.bounds, self.slab, self.slab.add())
            self.order.append(key)
            self._exemplars.append(None)
        if hist.observe(value, trace, at):
            self._marked.append(hist)

    def table(self) -> Table:
        """The keys and rows, every exemplar as it is now, and which changed."""
        exemplars = self._exemplars
        changed = []
        for hist in self._marked:
            hist.marked = False
            if hist.exemplars is not None:
                exemplars[hist.position] = hist.exemplars.copy()
            changed.append(hist.position)
        self._marked.clear()
        self.generation += 1
        return Table(self.order.copy(), self.slab, exemplars.copy(), changed, self.generation)

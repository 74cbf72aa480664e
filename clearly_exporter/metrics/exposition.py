"""Exposition of the engine's task and worker families, rendered per series and cached.

prometheus_client formats every sample on every scrape (~8 µs each): at 1,000 task names
× 4 queues × every state that is seconds, all of it holding the GIL the event consumer
needs. Here each series keeps its rendered lines and renders them again only when it
changed since the last scrape (a counter's value differs; a histogram hands out a new
read-only copy, see ``Histogram.copy``), so a scrape is mostly one join of bytes.

The families stay collected metrics: ``samples`` builds ordinary samples on demand, so
prometheus_client's own encoders (and the tests comparing against them) read the same
state. The exporter's other, small families go through prometheus_client as before.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate, chain, compress, islice
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from clearly_exporter.engine.histogram import Histogram

OPENMETRICS = "application/openmetrics-text"
#: A series' label values, in the order of its family's label names.
Key = tuple[str, ...]


def escape(value: str) -> str:
    """A label value as both formats quote it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def number(value: float) -> str:
    """Counts as integers, finite floats as ``repr``, the rest as prometheus_client does."""
    if type(value) is int or (type(value) is float and value - value == 0.0):
        return repr(value)
    return floatToGoString(value)


def exemplar_text(exemplar: Exemplar) -> str:
    """`` # {trace_id="..."} value timestamp``, as prometheus_client's OpenMetrics writes it."""
    labels = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(exemplar.labels.items()))
    text = f" # {{{labels}}} {floatToGoString(exemplar.value)}"
    return text if exemplar.timestamp is None else f"{text} {exemplar.timestamp}"


def changed(
    rows: Mapping[Key, object], last: Mapping[Key, object], differs: Callable[[Any, Any], bool]
) -> Iterable[Key]:
    """Keys of ``rows`` that are new or whose value ``differs`` from the one in ``last``.

    The engine's tables only ever append, so a snapshot's keys are the last one's, the
    same objects in the same order, then new ones: compared that way it runs in C
    (~20 ns a series). Otherwise (workers come and go) key by key.
    """
    n = len(last)
    if n <= len(rows) and all(map(operator.is_, islice(rows, n), last)):
        return chain(
            compress(rows, map(differs, islice(rows.values(), n), last.values())),
            islice(rows, n, None),
        )
    return [k for k, v in rows.items() if k not in last or differs(v, last[k])]


class SeriesCache:
    """A family's series as last rendered, in one format: what a scrape reuses."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: Mapping[Key, object] = {}
        #: Per series, its lines; in order of first appearance.
        self.lines: dict[Key, bytes] = {}
        #: Per series, its escaped labels (with the sample name, for scalars).
        self.prefixes: dict[Key, str] = {}


class CachedFamily:
    """One family of engine series, rendered through caches that outlive the scrape.

    ``caches`` is (text, OpenMetrics): the same cache twice unless the series' lines
    differ between the formats (exemplars), as only the header does otherwise.
    """

    unit = ""
    #: Whether a series' value changed since it was rendered: counts by value.
    differs: Callable[[Any, Any], bool] = staticmethod(operator.ne)

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        labels: tuple[str, ...],
        rows: Mapping[Key, object],
        caches: tuple[SeriesCache, SeriesCache],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.labels = labels
        self.rows = rows
        self.caches = caches

    def labelset(self, key: Key) -> str:
        return ",".join(f'{n}="{escape(v)}"' for n, v in zip(self.labels, key, strict=True))

    def render(self, out: list[bytes], openmetrics: bool) -> None:
        """Append the family's header and every series' lines to ``out``."""
        out.append(self._header(openmetrics))
        cache = self.caches[openmetrics]
        rows = self.rows
        with cache.lock:
            lines, prefixes = cache.lines, cache.prefixes
            for key in changed(rows, cache.rows, self.differs):
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = self._prefix(key)
                lines[key] = self._lines(prefix, rows[key], openmetrics).encode()
            if len(lines) > len(rows):
                for key in lines.keys() - rows.keys():
                    del lines[key], prefixes[key]
            cache.rows = rows
            out.extend(lines.values())

    def _header(self, openmetrics: bool) -> bytes:
        name, typ = self.name, self.type
        if openmetrics:
            doc = escape(self.documentation)
        else:
            doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
            if typ == "counter":
                name += "_total"
            elif typ == "info":
                name, typ = name + "_info", "gauge"
        return f"# HELP {name} {doc}\n# TYPE {name} {typ}\n".encode()

    def _prefix(self, key: Key) -> str:
        raise NotImplementedError

    def _lines(self, prefix: str, value: object, openmetrics: bool) -> str:
        raise NotImplementedError


class ScalarFamily(CachedFamily):
    """A counter, gauge or info family: one sample per series."""

    @property
    def sample_name(self) -> str:
        suffix = {"counter": "_total", "info": "_info"}.get(self.type, "")
        return self.name + suffix

    def _prefix(self, key: Key) -> str:
        return f"{self.sample_name}{{{self.labelset(key)}}} "

    def _lines(self, prefix: str, value: object, openmetrics: bool) -> str:
        if type(value) is float and value - value == 0.0:  # ages: every scrape, so inlined
            return f"{prefix}{value!r}\n"
        return f"{prefix}{number(value)}\n"  # type: ignore[arg-type]

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same rows as ordinary samples."""
        name = self.sample_name
        return [
            Sample(name, dict(zip(self.labels, key, strict=True)), value)
            for key, value in self.rows.items()
        ]


class HistogramFamily(CachedFamily):
    """Histogram series; exemplars (if ``exemplars``) only in OpenMetrics."""

    #: A histogram's read-only copy is the same object until it is observed again.
    differs = staticmethod(operator.is_not)

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        rows: Mapping[Key, Histogram],
        caches: tuple[SeriesCache, SeriesCache],
        bounds: tuple[float, ...],
        exemplars: bool = False,
    ) -> None:
        super().__init__(name, documentation, "histogram", labels, rows, caches)
        self.exemplars = exemplars
        self._les = [f'le="{b!r}"}} ' for b in map(float, bounds)] + ['le="+Inf"} ']

    def _prefix(self, key: Key) -> str:
        return self.labelset(key)

    def _lines(self, prefix: str, value: object, openmetrics: bool) -> str:
        hist: Histogram = value  # type: ignore[assignment]
        name = self.name
        counts = list(accumulate(hist.counts))
        bucket = f"{name}_bucket{{{prefix},"
        exemplars = hist.exemplars if openmetrics and self.exemplars else None
        if exemplars is None:
            lines = [f"{bucket}{le}{n}\n" for le, n in zip(self._les, counts, strict=True)]
        else:
            lines = [
                f"{bucket}{le}{n}{exemplar_text(ex) if ex else ''}\n"
                for le, n, ex in zip(self._les, counts, exemplars, strict=True)
            ]
        lines.append(f"{name}_count{{{prefix}}} {counts[-1]}\n")
        lines.append(f"{name}_sum{{{prefix}}} {floatToGoString(hist.total)}\n")
        return "".join(lines)

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same rows as ordinary samples."""
        out = []
        for key, hist in self.rows.items():
            labels = dict(zip(self.labels, key, strict=True))
            for bound, n, *exemplar in hist.cumulative():
                ex = exemplar[0] if exemplar and self.exemplars else None
                out.append(Sample(f"{self.name}_bucket", {**labels, "le": bound}, n, None, ex))
            out.append(Sample(f"{self.name}_count", labels, hist.count))
            out.append(Sample(f"{self.name}_sum", labels, hist.total))
        return out


class _Collected:
    """Families already collected, in the shape prometheus_client's encoders read."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def generate(registry: Collector, accept: str) -> tuple[bytes, str]:
    """A scrape's body and content type, negotiated as prometheus_client does.

    Cached families are rendered as they are collected; the others, with their format's
    ending (``# EOF``), by prometheus_client.
    """
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith(OPENMETRICS)
    out: list[bytes] = []
    rest: list[Metric] = []
    for metric in registry.collect():
        if isinstance(metric, CachedFamily):
            metric.render(out, openmetrics)
        else:
            rest.append(metric)
    out.append(encoder(_Collected(rest)))  # type: ignore[arg-type]
    return b"".join(out), content_type

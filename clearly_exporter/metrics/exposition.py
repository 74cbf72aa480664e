"""Exposition of the engine's task and worker families, rendered in cached blocks of series.

prometheus_client formats every sample on every scrape (~8 µs each): at 1,000 task names
× 4 queues × every state that is seconds, all of it holding the GIL the event consumer
needs. Here a family's series are kept in blocks, each with a ``bytes`` template of its
lines (labels baked in) and its last rendering. A block none of whose series changed since
the last scrape (a counter's value is equal; a histogram hands out the same read-only copy,
see ``Histogram.freeze``) is reused as it is; one that changed is rendered again by a single
``template % values``, ~1 µs for a histogram's 15 lines (``bytes %`` formats ints about
three times as fast as ``str %``, and needs no encoding afterwards). Histogram blocks also
keep each series' lines: under a steady load a few series of most blocks change between
two scrapes, and only those are rendered again.

Built with ``CLEARLY_EXPORTER_COMPILE=1``, ``_lines`` (C) does what ``%`` does, from the
template split at its placeholders (``pieces``): a histogram series in 0.8 µs against
2.8 µs, as it writes digits straight into the body and sums the cumulative counts on the
way. Ages keep ``%`` (``%.3f``); ``_lines`` writes floats as ``repr``.

The families stay collected metrics: ``samples`` builds ordinary samples on demand, so
prometheus_client's own encoders (and the tests comparing against them) read the same
state. The exporter's other, small families go through prometheus_client as before.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, compress, repeat
from operator import is_not
from typing import Any, NamedTuple

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from clearly_exporter.engine.histogram import Frozen, TraceExemplar, cumulative

try:
    from clearly_exporter.metrics import _lines
except ImportError:  # built without CLEARLY_EXPORTER_COMPILE=1: ``%`` writes the lines
    _lines = None

OPENMETRICS = "application/openmetrics-text"
#: A series' label values, in the order of its family's label names.
Key = tuple[str, ...]
#: Values a ``%a`` writes as ``number`` does, when finite.
PLAIN = frozenset({int, float})
#: A histogram sum ``repr`` writes as prometheus_client does: Go uses exponents from 1e21,
#: ``floatToGoString`` from 1e6.
PLAIN_SUM = 1e6
#: A conversion in a template: ``%d``, ``%a``, ``%s``, or ``%%`` (a ``%`` in a label value).
PLACEHOLDER = re.compile(rb"%(.)", re.DOTALL)


def escape(value: str) -> str:
    """A label value as both formats quote it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def number(value: float) -> str:
    """Counts as integers, finite floats as ``repr``, the rest as prometheus_client does."""
    if type(value) is int or (type(value) is float and value - value == 0.0):
        return repr(value)
    return floatToGoString(value)


def exemplar_text(exemplar: TraceExemplar | None) -> bytes:
    """`` # {trace_id="..."} value timestamp``, as prometheus_client's OpenMetrics writes it;
    nothing for no exemplar."""
    if exemplar is None:
        return b""
    trace, value, timestamp = exemplar
    shown = value if type(value) is float and abs(value) < PLAIN_SUM else floatToGoString(value)
    text = f' # {{trace_id="{escape(trace)}"}} {shown}'
    return (text if timestamp is None else f"{text} {timestamp}").encode()


def pieces(template: bytes) -> tuple[bytes, ...]:
    """The template's text between its placeholders (``%d``, ``%a``, ``%s``), ``%%`` as
    ``%``: what ``_lines`` writes the values between."""
    split = PLACEHOLDER.split(template)
    out, piece = [], split[0]
    for kind, text in zip(split[1::2], split[2::2], strict=True):
        if kind == b"%":
            piece += b"%" + text
        elif kind not in b"das":
            raise ValueError(f"_lines writes no %{kind.decode(errors='replace')}")
        else:
            out.append(piece)
            piece = text
    out.append(piece)
    return tuple(out)


class Verbatim(str):
    """Text a ``%a`` writes as it is (``ascii`` of a ``str`` would quote it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


class Block:
    """A run of a family's series: its template, and its lines as last rendered, in one
    piece or as ``parts`` (each series' lines, for a family rendered series by series)."""

    __slots__ = ("body", "parts", "template")

    def __init__(self, template: Any) -> None:
        self.template = template
        self.body: bytes | list[bytes] | None = None
        self.parts: list[bytes] | None = None


class Spec(NamedTuple):
    """A family without its series and caches: what ``build`` makes it again from."""

    histogram: bool
    name: str
    documentation: str
    type: str
    labels: tuple[str, ...]
    bounds: tuple[float, ...] = ()
    exemplars: bool = False
    #: For an ``AgeFamily``: the time its ages are worked out at.
    at: float | None = None


class SeriesCache:
    """A family's series as last rendered, in one format, in blocks: what a scrape reuses."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: The family's keys and values as last rendered, by position.
        self.keys: list[Key] = []
        self.values: list[object] = []
        #: One per ``CachedFamily.block`` series.
        self.blocks: list[Block] = []

    def clear(self) -> None:
        self.keys, self.values, self.blocks = [], [], []


class Caches:
    """Every family's rendered series, kept from one scrape to the next."""

    def __init__(self) -> None:
        self._caches: dict[str, SeriesCache] = {}

    def of(self, name: str, by_format: bool = False) -> tuple[SeriesCache, SeriesCache]:
        """The family's (text, OpenMetrics) caches: one for both unless their lines
        differ (exemplars)."""
        text = self._caches.setdefault(name, SeriesCache())
        if not by_format:
            return text, text
        return text, self._caches.setdefault(name + " openmetrics", SeriesCache())


class CachedFamily:
    """One family of engine series, rendered through caches that outlive the scrape.

    ``caches`` is (text, OpenMetrics): the same cache twice unless the series' lines
    differ between the formats (exemplars), as only the header does otherwise.
    """

    unit = ""
    #: The last of a scrape's engine families, yielded under the engine lock: a render
    #: request can go at once, before the lock is released (after, each of its system
    #: calls waits for the GIL behind the consumer: ~25 ms a scrape under load).
    final = False
    #: Series per block: about 50 KB of lines. Fewer would render less of what did not
    #: change; more, fewer writes and comparisons.
    block = 512

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        labels: tuple[str, ...],
        keys: list[Key],
        values: list,
        caches: tuple[SeriesCache, SeriesCache],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.labels = labels
        #: The series by position: a key's value is at the same place.
        self.keys = keys
        self.values = values
        self.caches = caches
        #: (generation, positions changed since the generation before), when the engine
        #: knows them: ``delta`` then sends those without comparing every series.
        self.changes: tuple[int, list[int]] | None = None

    def labelset(self, key: Key) -> str:
        return ",".join(f'{n}="{escape(v)}"' for n, v in zip(self.labels, key, strict=True))

    @property
    def spec(self) -> Spec:
        return Spec(False, self.name, self.documentation, self.type, self.labels)

    def render(self, out: list[bytes], openmetrics: bool) -> None:
        """Append the family's header and its blocks to ``out``."""
        self.render_series(out, openmetrics, self.keys, self.values)

    def render_series(
        self, out: list[bytes], openmetrics: bool, keys: list[Key], values: list
    ) -> None:
        """Append the header and the blocks of these series (by position) to ``out``.

        The engine's tables only ever append, so a snapshot's keys are the last one's, in
        the same order, then new ones: only the last block's template and new blocks' are
        built. Otherwise (workers come and go) every block is built again. The cache keeps
        ``values`` itself: a caller must not change the list afterwards.
        """
        out.append(self._header(openmetrics))
        cache = self.caches[openmetrics]
        size = self.block
        with cache.lock:
            n = len(cache.keys)
            if n > len(keys) or keys[:n] != cache.keys:
                cache.clear()
                n = 0
            blocks, last = cache.blocks, cache.values
            if n < len(keys):
                first = n // size
                del blocks[first:]
                for start in range(first * size, len(keys), size):
                    blocks.append(Block(self._template(keys[start : start + size], openmetrics)))
            for block, start in zip(blocks, range(0, len(keys), size), strict=True):
                now = values[start : start + size]
                if block.body is None:
                    self._fill(block, now, None, openmetrics)
                elif now != (before := last[start : start + size]):
                    self._fill(block, now, before, openmetrics)
            cache.keys, cache.values = keys, values
            for block in blocks:
                body = block.body
                if type(body) is bytes:
                    out.append(body)
                else:
                    out.extend(body)  # type: ignore[arg-type]

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

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> Any:
        raise NotImplementedError

    def _fill(
        self,
        block: Block,
        values: list,
        before: list | None,
        openmetrics: bool,
    ) -> None:
        """Render ``block.body`` for ``values``; ``before`` are the values it was last
        rendered for, if it was."""
        raise NotImplementedError


class ScalarFamily(CachedFamily):
    """A counter, gauge or info family: one sample per series."""

    #: How each value is written into the template.
    placeholder = "%a"

    @property
    def sample_name(self) -> str:
        suffix = {"counter": "_total", "info": "_info"}.get(self.type, "")
        return self.name + suffix

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> Any:
        """The lines' text, split into ``pieces`` for ``_lines``."""
        text = self._text(keys)
        return text if _lines is None else pieces(text)

    def _text(self, keys: Sequence[Key]) -> bytes:
        name = self.sample_name
        end = f"}} {self.placeholder}\n"
        lines = (f"{name}{{{self.labelset(key).replace('%', '%%')}{end}" for key in keys)
        return "".join(lines).encode()

    def _fill(
        self,
        block: Block,
        values: list,
        before: list | None,
        openmetrics: bool,
    ) -> None:
        """``%a`` writes ints and finite floats as ``repr``; anything else goes through
        ``number`` (an infinite or NaN value makes the sum one too)."""
        if all(map(PLAIN.__contains__, map(type, values))):
            total = sum(values)
            if total - total == 0:
                block.body = _filled(block.template, values)
                return
        block.body = _filled(block.template, [Verbatim(number(v)) for v in values])

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same series as ordinary samples."""
        name = self.sample_name
        return [
            Sample(name, dict(zip(self.labels, key, strict=True)), value)
            for key, value in zip(self.keys, self.values, strict=True)
        ]


class AgeFamily(ScalarFamily):
    """A gauge of ages: its values are start times (None: no start, age 0), worked out as
    ages at ``at`` only when rendered.

    Start times change seldom, and ages every scrape: the render process is sent only the
    start times that changed (16,000 ages at 1,000 task names were each sent every scrape).

    Ages are written to the millisecond, ``%.3f``: every one is written again every scrape,
    and a float's shortest ``repr`` took three times as long (16,000 ages: 6.4 against
    1.9 ms). A millisecond is finer than any panel or alert reads an age.
    """

    placeholder = "%.3f"

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        keys: list[Key],
        values: list[float | None],
        caches: tuple[SeriesCache, SeriesCache],
        at: float,
    ) -> None:
        super().__init__(name, documentation, "gauge", labels, keys, values, caches)
        self.at = at

    @property
    def spec(self) -> Spec:
        return Spec(False, self.name, self.documentation, self.type, self.labels, at=self.at)

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> bytes:
        """The text in any build: ``_lines`` writes floats as ``repr``, not ``%.3f``."""
        return self._text(keys)

    def ages(self, starts: Iterable[float | None]) -> list[float]:
        """Finite, never negative: 0 for no start, a start after ``at``, or one that is
        not a time (so ``%.3f`` never meets an infinity or a NaN)."""
        at = self.at
        return [
            age if start is not None and 0.0 < (age := at - start) < math.inf else 0.0
            for start in starts
        ]

    def _fill(self, block: Block, values: list, before: list | None, openmetrics: bool) -> None:
        """Every age is a finite float (``ages``)."""
        block.body = block.template % tuple(values)

    def render_series(
        self, out: list[bytes], openmetrics: bool, keys: list[Key], values: list
    ) -> None:
        """``values`` are start times: rendered as ages."""
        super().render_series(out, openmetrics, keys, self.ages(values))

    @property
    def samples(self) -> list[Sample]:
        labels, ages = self.labels, self.ages(self.values)
        return [
            Sample(self.name, dict(zip(labels, key, strict=True)), round(age, 3))
            for key, age in zip(self.keys, ages, strict=True)
        ]


class HistogramFamily(CachedFamily):
    """Histogram series, as frozen values; exemplars (if ``exemplars``) only in OpenMetrics."""

    #: A histogram's 15 lines are ~1.7 KB.
    block = 32

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        keys: list[Key],
        values: list[Frozen],
        caches: tuple[SeriesCache, SeriesCache],
        bounds: tuple[float, ...],
        exemplars: bool = False,
    ) -> None:
        super().__init__(name, documentation, "histogram", labels, keys, values, caches)
        self.bounds = bounds
        self.exemplars = exemplars
        self._les = [f'le="{b!r}"}} ' for b in map(float, bounds)] + ['le="+Inf"} ']

    @property
    def spec(self) -> Spec:
        return Spec(
            True, self.name, self.documentation, self.type, self.labels, self.bounds, self.exemplars
        )

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> tuple[bytes | None, list]:
        """The block's template and each series' (``_texts``); for ``_lines``, no block's
        template, and each series' split into ``pieces``."""
        texts = self._texts(keys, openmetrics)
        if _lines is not None:
            return None, [pieces(text) for text in texts]
        return b"".join(texts), texts

    def _texts(self, keys: Sequence[Key], openmetrics: bool) -> list[bytes]:
        """Each series' template: a ``%d`` per cumulative bucket (and a ``%s`` for its
        exemplar, where they are shown), one for the count, ``%a`` for the sum."""
        end = "%s\n" if openmetrics and self.exemplars else "\n"
        name, out = self.name, []
        for key in keys:
            labels = self.labelset(key).replace("%", "%%")
            bucket = f"{name}_bucket{{{labels},"
            lines = [f"{bucket}{le}%d{end}" for le in self._les]
            lines.append(f"{name}_count{{{labels}}} %d\n{name}_sum{{{labels}}} %a\n")
            out.append("".join(lines).encode())
        return out

    def _fill(
        self,
        block: Block,
        values: list,
        before: list | None,
        openmetrics: bool,
    ) -> None:
        """A block of which a few series changed (a steady load) renders only those, each
        on its own; one with most changed (a backlog draining) is rendered at once, twice
        as fast as series by series with ``%``. With ``_lines``, always series by series."""
        shown = openmetrics and self.exemplars
        whole, templates = block.template
        parts = block.parts
        if whole is not None and (
            before is None
            or sum(1 for hist, old in zip(values, before, strict=True) if hist is not old) * 2
            > len(values)
        ):
            args: list = []
            extend = args.extend
            for hist in values:
                extend(_values(hist, shown))
            block.body, block.parts = whole % tuple(args), None
            return
        if parts is None:
            parts = block.parts = [
                _series(t, hist, shown) for t, hist in zip(templates, values, strict=True)
            ]
        else:
            for i in compress(range(len(values)), map(is_not, values, before)):  # type: ignore[arg-type]
                parts[i] = _series(templates[i], values[i], shown)
        # Not joined: ~38 MB copied again each scrape (20 ms) for one ``writev`` to copy.
        block.body = parts

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same series as ordinary samples."""
        out = []
        for key, hist in zip(self.keys, self.values, strict=True):
            labels = dict(zip(self.labels, key, strict=True))
            for bound, n, *exemplar in cumulative(self.bounds, hist):
                ex = exemplar[0] if exemplar and self.exemplars else None
                out.append(Sample(f"{self.name}_bucket", {**labels, "le": bound}, n, None, ex))
            out.append(Sample(f"{self.name}_count", labels, sum(hist[0])))
            out.append(Sample(f"{self.name}_sum", labels, hist[1]))
        return out


def build(spec: Spec, caches: Caches) -> CachedFamily:
    """A family made again from its ``spec``, without series, rendering through ``caches``."""
    histogram, name, documentation, typ, labels, bounds, exemplars, at = spec
    if histogram:
        by_format = caches.of(name, exemplars)
        return HistogramFamily(name, documentation, labels, [], [], by_format, bounds, exemplars)
    if at is not None:
        return AgeFamily(name, documentation, labels, [], [], caches.of(name), at)
    return ScalarFamily(name, documentation, typ, labels, [], [], caches.of(name))


def _values(hist: Frozen, exemplars: bool) -> list:
    """What a histogram series' template takes: cumulative buckets (each followed by its
    exemplar's text if ``exemplars``), the count, the sum."""
    counts, total, marks = hist
    args: list = list(accumulate(counts))
    count = args[-1]
    if exemplars:
        texts = map(exemplar_text, marks) if marks is not None else repeat(b"")
        args = list(chain.from_iterable(zip(args, texts, strict=False)))
    args.append(count)
    args.append(_sum(total))
    return args


def _sum(total: float) -> float | Verbatim:
    """A histogram's sum as its template takes it (``%a``)."""
    return total if abs(total) < PLAIN_SUM else Verbatim(floatToGoString(total))


def _series(template: Any, hist: Frozen, exemplars: bool) -> bytes:
    """One histogram series' lines, from its template (``pieces`` for ``_lines``)."""
    if _lines is None:
        return template % tuple(_values(hist, exemplars))
    counts, total, marks = hist
    texts = None
    if exemplars:
        texts = list(map(exemplar_text, marks)) if marks is not None else [b""] * len(counts)
    return _lines.histogram(template, counts, _sum(total), texts)


def _filled(template: Any, values: Sequence) -> bytes:
    """A scalar block's lines: by ``_lines`` from its ``pieces``, or by ``%``."""
    if _lines is None:
        return template % tuple(values)
    return _lines.fill(template, values)


class Collected:
    """Families already collected, in the shape prometheus_client's encoders read."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def generate(registry: Collector, accept: str) -> tuple[bytes, str]:
    """A scrape's body and content type, negotiated as prometheus_client does."""
    chunks, content_type = generate_chunks(registry, accept)
    return b"".join(chunks), content_type


def generate_chunks(registry: Collector, accept: str) -> tuple[list[bytes], str]:
    """A scrape's body in pieces (a family's header, then its blocks), and its content type.

    Cached families are rendered as they are collected; the others, with their format's
    ending (``# EOF``), by prometheus_client. The collection is closed even when rendering
    fails: a collector may hold a lock while it yields (``EngineCollector`` holds the
    engine's), which a traceback keeping the generator alive must not keep held.
    """
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith(OPENMETRICS)
    out: list[bytes] = []
    rest: list[Metric] = []
    collected = registry.collect()
    try:
        for metric in collected:
            if isinstance(metric, CachedFamily):
                metric.render(out, openmetrics)
            else:
                rest.append(metric)
    finally:
        close = getattr(collected, "close", None)
        if close is not None:
            close()
    out.append(encoder(Collected(rest)))  # type: ignore[arg-type]
    return out, content_type

"""Exposition of the engine's task and worker families, rendered in cached blocks of series.

prometheus_client formats every sample on every scrape (~8 µs each): at 1,000 task names
× 4 queues × every state that is seconds, all of it holding the GIL the event consumer
needs. Here a family's series are kept in blocks, each with a ``bytes`` template of its
lines (labels baked in) and its last rendering. A block none of whose series changed since
the last scrape is reused as it is; one that changed is rendered again by a single
``template % values`` (``bytes %`` formats ints about three times as fast as ``str %``, and
needs no encoding afterwards). Here: the base, the families whose values come with them
(``ScalarFamily``: failures, workers) and the templates; ``rows`` has the families read
from the engine's slabs.

Built with ``CLEARLY_EXPORTER_COMPILE=1``, ``_lines`` (C) does what ``%`` does, from the
template split at its placeholders (``pieces``): a histogram series in 0.8 µs against
2.8 µs, as it writes digits straight into the body and sums the cumulative counts on the
way; a block of slab rows (``rows``) in one call, from its cells.

The families stay collected metrics: ``samples`` builds ordinary samples on demand, so
prometheus_client's own encoders (and the tests comparing against them) read the same
state. The exporter's other, small families go through prometheus_client as before.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, chain
from typing import Any, NamedTuple

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from clearly_exporter.engine.histogram import TraceExemplar

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
#: A slab cell's size (``engine.slab``).
CELL_BYTES = 8
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
    """A run of a family's series: its template, and its lines as last rendered; for a
    histogram's, where each series' lines end in them (``ends``: 8-byte offsets), so a
    series that did not change is copied as it is."""

    __slots__ = ("body", "ends", "template")

    def __init__(self, template: Any) -> None:
        self.template = template
        self.body: bytes | None = None
        self.ends: bytes | None = None


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
    #: For a family of slab rows (``rows``): cells a row; 0 for one of values.
    width: int = 0


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

    def truncate(self, blocks: int) -> None:
        """Keep the first ``blocks`` blocks."""
        del self.blocks[blocks:]

    def add(self, block: Block) -> None:
        self.blocks.append(block)


class Caches:
    """Every family's rendered series, kept from one scrape to the next."""

    def __init__(self) -> None:
        self._caches: dict[str, SeriesCache] = {}

    def of(
        self, name: str, by_format: bool = False, kind: type[SeriesCache] = SeriesCache
    ) -> tuple[SeriesCache, SeriesCache]:
        """The family's (text, OpenMetrics) caches, of ``kind``: one for both unless their
        lines differ (exemplars)."""
        text = self._get(name, kind)
        return (text, text) if not by_format else (text, self._get(name + " openmetrics", kind))

    def _get(self, name: str, kind: type[SeriesCache]) -> SeriesCache:
        cache = self._caches.get(name)
        if type(cache) is not kind:
            cache = self._caches[name] = kind()
        return cache


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
        caches: tuple[SeriesCache, SeriesCache],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.labels = labels
        #: The series' label values, by position.
        self.keys = keys
        self.caches = caches

    def labelset(self, key: Key) -> str:
        return ",".join(f'{n}="{escape(v)}"' for n, v in zip(self.labels, key, strict=True))

    @property
    def sample_name(self) -> str:
        suffix = {"counter": "_total", "info": "_info"}.get(self.type, "")
        return self.name + suffix

    @property
    def spec(self) -> Spec:
        return Spec(False, self.name, self.documentation, self.type, self.labels)

    def render(self, out: list[bytes], openmetrics: bool) -> None:
        """Append the family's header and its blocks to ``out``."""
        raise NotImplementedError

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
        """A block's template, for these series."""
        raise NotImplementedError

    def _blocks(self, cache: SeriesCache, keys: list[Key], openmetrics: bool) -> list[Block]:
        """The cache's blocks for these series, the cache holding the lock.

        Where the keys are the cached ones, in the same order, then new ones (the engine
        only appends), only the last block's template and new blocks' are built.
        Otherwise (workers come and go) every block is built again.
        """
        size, n = self.block, len(cache.keys)
        if n > len(keys) or keys[:n] != cache.keys:
            cache.clear()
            n = 0
        if n < len(keys):
            first = n // size
            cache.truncate(first)
            for start in range(first * size, len(keys), size):
                cache.add(Block(self._template(keys[start : start + size], openmetrics)))
        cache.keys = keys
        return cache.blocks


def emit(out: list[bytes], blocks: list[Block]) -> None:
    """Append the blocks' lines to ``out``."""
    out.extend([block.body for block in blocks])  # type: ignore[misc]


class ScalarFamily(CachedFamily):
    """A counter, gauge or info family whose values come with it: one sample per series."""

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
        super().__init__(name, documentation, typ, labels, keys, caches)
        #: A key's value is at the same place.
        self.values = values

    def render(self, out: list[bytes], openmetrics: bool) -> None:
        self.render_series(out, openmetrics, self.keys, self.values)

    def render_series(
        self, out: list[bytes], openmetrics: bool, keys: list[Key], values: list
    ) -> None:
        """Append the header and the blocks of these series (by position) to ``out``; a
        block is rendered again where its values are not the ones it was rendered for. The
        cache keeps ``values`` itself: a caller must not change the list afterwards."""
        out.append(self._header(openmetrics))
        cache = self.caches[openmetrics]
        size = self.block
        with cache.lock:
            blocks, last = self._blocks(cache, keys, openmetrics), cache.values
            for block, start in zip(blocks, range(0, len(keys), size), strict=True):
                now = values[start : start + size]
                if block.body is None or now != last[start : start + size]:
                    self._fill(block, now)
            cache.values = values
            emit(out, blocks)

    def _template(self, keys: Sequence[Key], openmetrics: bool) -> Any:
        return scalar_template(self.sample_name, self.labelset, keys, "%a")

    def _fill(self, block: Block, values: list) -> None:
        """``%a`` writes ints and finite floats as ``repr``; anything else goes through
        ``number`` (an infinite or NaN value makes the sum one too)."""
        if all(map(PLAIN.__contains__, map(type, values))):
            total = sum(values)
            if total - total == 0:
                block.body = filled(block.template, values)
                return
        block.body = filled(block.template, [Verbatim(number(v)) for v in values])

    @property
    def samples(self) -> list[Sample]:
        """For prometheus_client's encoders: the same series as ordinary samples."""
        name = self.sample_name
        return [
            Sample(name, dict(zip(self.labels, key, strict=True)), value)
            for key, value in zip(self.keys, self.values, strict=True)
        ]


def scalar_template(
    sample: str,
    labelset: Callable[[Key], str],
    keys: Sequence[Key],
    placeholder: str,
    split: bool = True,
) -> Any:
    """A line per series, the value as ``placeholder``; split into ``pieces`` for
    ``_lines`` if ``split`` (it writes ``%d``, ``%a``, ``%s``)."""
    end = f"}} {placeholder}\n"
    text = "".join(f"{sample}{{{labelset(key).replace('%', '%%')}{end}" for key in keys).encode()
    return pieces(text) if split and _lines is not None else text


def histogram_templates(
    name: str,
    labelset: Callable[[Key], str],
    bounds: tuple[float, ...],
    keys: Sequence[Key],
    exemplars: bool,
    split: bool = True,
) -> list:
    """Each series' template: a ``%d`` per cumulative bucket (and a ``%s`` for its
    exemplar if ``exemplars``), one for the count, ``%a`` for the sum; split into
    ``pieces`` for ``_lines`` if ``split``."""
    end = "%s\n" if exemplars else "\n"
    les = [f'le="{b!r}"}} ' for b in map(float, bounds)] + ['le="+Inf"} ']
    out = []
    for key in keys:
        labels = labelset(key).replace("%", "%%")
        bucket = f"{name}_bucket{{{labels},"
        lines = [f"{bucket}{le}%d{end}" for le in les]
        lines.append(f"{name}_count{{{labels}}} %d\n{name}_sum{{{labels}}} %a\n")
        text = "".join(lines).encode()
        out.append(pieces(text) if split and _lines is not None else text)
    return out


def histogram_args(counts: list[int], total: float, texts: list[bytes] | None) -> list:
    """What a histogram series' template takes: cumulative buckets (each followed by its
    exemplar's text unless ``texts`` is None), the count, the sum."""
    args: list = list(accumulate(counts))
    count = args[-1]
    if texts is not None:
        args = list(chain.from_iterable(zip(args, texts, strict=True)))
    args.append(count)
    args.append(_sum(total))
    return args


def histogram_block(
    templates: list,
    body: bytes | None,
    ends: bytes | None,
    now: bytes,
    before: bytes | None,
    width: int,
    buckets: int,
    texts: dict[int, list[bytes]] | None = None,
) -> tuple[bytes, bytes]:
    """A block of histogram series' lines and where each series' end, from the rows of
    ``now``: rows of ``width`` 8-byte cells, ``buckets`` counts and then the sum. A row
    the same in ``before`` as in ``now`` and not in ``texts`` is copied from ``body``
    (``ends``: where each row's lines end in it); the others, or all if there is no
    ``body`` or ``before``, are written again (none: ``body`` and ``ends`` themselves).
    ``texts``: None for templates that show no exemplar; else each row's buckets'
    exemplar texts, by index (a row not in it shows none). In one call by ``_lines``
    where it is built."""
    if _lines is not None:
        return _lines.block(templates, body, ends, now, before, width, buckets, _sum, texts)
    span = width * CELL_BYTES
    cells = memoryview(now)
    counts, sums = cells.cast("q"), cells.cast("d")
    old_ends = memoryview(ends).cast("q") if body is not None and ends is not None else None
    none = [b""] * buckets
    parts: list[bytes] = []
    start = redone = 0
    for i, template in enumerate(templates):
        at = i * span
        end = old_ends[i] if old_ends is not None else 0
        same = before is not None and now[at : at + span] == before[at : at + span]
        if old_ends is not None and same and (texts is None or i not in texts):
            parts.append(body[start:end])  # type: ignore[index]
        else:
            redone += 1
            base = i * width
            row = counts[base : base + buckets].tolist()
            shown = None if texts is None else texts.get(i, none)
            parts.append(template % tuple(histogram_args(row, sums[base + buckets], shown)))
        start = end
    if not redone and body is not None and ends is not None:
        return body, ends
    return b"".join(parts), array("q", accumulate(map(len, parts))).tobytes()


def _sum(total: float) -> float | Verbatim:
    """A histogram's sum as its template takes it (``%a``)."""
    return total if abs(total) < PLAIN_SUM else Verbatim(floatToGoString(total))


def filled(template: Any, values: Sequence) -> bytes:
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

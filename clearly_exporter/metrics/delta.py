"""What changed in the engine's families since the last scrape, and a copy kept from it.

The render process holds a copy of every family's series; each scrape the exporter sends
it only the difference from what it sent last. For a family of values (failures, the
workers'): series appended, and values changed, by position. For a family of slab rows
(``rows``): only the keys appended and, with tracing, the exemplars that changed; it reads
the values in the slab itself, whose segments it is handed once (``RenderProcess``).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import compress
from operator import is_not

from clearly_exporter.engine.slab import Slab
from clearly_exporter.metrics.exposition import CachedFamily, Caches, Key, ScalarFamily, Spec
from clearly_exporter.metrics.rows import (
    AgeFamily,
    CountFamily,
    Exemplars,
    HistogramFamily,
    RowsCache,
    RowsFamily,
)

#: A family's change: its spec, whether its series start over (keys no longer a
#: continuation of the ones sent), keys appended, the positions of values that changed or
#: are new, and those values (for a histogram of rows: of exemplars). Two lists, not a
#: list of (position, value) pairs: as many objects made under the engine lock, tracked
#: by the cyclic collector, pickled, and unpickled again.
Update = tuple[Spec, bool, list[Key], list[int], list]
#: Per family name, its keys and values as sent last, and for a histogram of rows the
#: engine's table they came from (0 for none).
Sent = dict[str, tuple[list[Key], list, int]]
#: Series compared at once before looking for the ones that changed, one by one.
STRIDE = 512


def changes(
    keys: list[Key], values: list, before: tuple[list[Key], list] | None
) -> tuple[bool, list[Key], list[int], list]:
    """What turns ``before`` (keys and values as sent last) into these series.

    Keys as many as before are compared as they are: a slice would touch every key.
    """
    old_keys, old = before or ([], [])
    n = len(old_keys)
    if before is None or n > len(keys) or (keys if n == len(keys) else keys[:n]) != old_keys:
        return True, keys, list(range(len(values))), values
    positions: list[int] = []
    changed: list = []
    for start in range(0, n, STRIDE):
        now, then = values[start : start + STRIDE], old[start : start + STRIDE]
        if now != then:
            # By identity: a value the engine did not touch is the same object (an
            # unchanged histogram's frozen copy too); an equal one sent again does no harm.
            moved = list(map(is_not, now, then))
            positions.extend(compress(range(start, start + len(now)), moved))
            changed.extend(compress(now, moved))
    positions.extend(range(n, len(values)))
    changed.extend(values[n:])
    return False, keys[n:], positions, changed


def update(family: CachedFamily, sent: Sent) -> Update:
    """The family's change since ``sent``, which then holds the family as it is now.

    A family of rows sends the keys appended since (the engine only appends), and its
    exemplars that changed since the table sent last: all of them the first time, and
    after a table that was not sent (collected for a scrape rendered in the exporter).
    """
    spec, keys = family.spec, family.keys
    before = sent.get(spec.name)
    if isinstance(family, RowsFamily):
        positions: list[int] = []
        generation = 0
        if isinstance(family, HistogramFamily) and family.exemplars:
            marks, generation = family.marks, family.generation
            positions = (
                sorted(family.forced)
                if before is not None and before[2] == generation - 1
                else [i for i, mark in enumerate(marks) if mark is not None]
            )
        sent[spec.name] = (keys, [], generation)
        changed = [family.marks[i] for i in positions] if positions else []
        n = 0 if before is None else len(before[0])
        return spec, before is None, keys[n:], positions, changed
    assert isinstance(family, ScalarFamily)
    values = family.values
    restart, new, positions, changed = changes(keys, values, before and before[:2])
    sent[spec.name] = (keys, values, 0)
    return spec, restart, new, positions, changed


def build(spec: Spec, caches: Caches, slab: Slab | None = None) -> CachedFamily:
    """A family made again from its ``spec``, without series, rendering through ``caches``;
    a family of rows reads ``slab``."""
    histogram, name, documentation, typ, labels, bounds, exemplars, at, width = spec
    if not width:
        return ScalarFamily(name, documentation, typ, labels, [], [], caches.of(name))
    slab = slab or Slab(width)
    if histogram:
        by_format = caches.of(name, exemplars, RowsCache)
        return HistogramFamily(name, documentation, labels, [], slab, by_format, bounds, exemplars)
    if at is not None:
        return AgeFamily(name, documentation, labels, [], slab, caches.of(name, kind=RowsCache), at)
    return CountFamily(name, documentation, typ, labels, [], slab, caches.of(name, kind=RowsCache))


class Series:
    """The render process's copy of every family's series, their slabs and their
    rendered blocks."""

    def __init__(self) -> None:
        self.caches = Caches()
        #: Per family of values, its keys and values.
        self._series: dict[str, tuple[list[Key], list]] = {}
        #: Per family of rows, its keys, its exemplars, and its slab as mapped here.
        self._rows: dict[str, list[Key]] = {}
        self._marks: dict[str, Exemplars] = {}
        #: Positions whose exemplars came since the last OpenMetrics scrape.
        self._unshown: dict[str, set[int]] = {}
        self.slabs: dict[str, Slab] = {}

    def attach(self, name: str, width: int, per_segment: int, fds: list[int]) -> None:
        """Map the family's next segments, which ``fds`` hold (the caller's to close)."""
        slab = self.slabs.get(name)
        if slab is None or (slab.width, slab.per_segment) != (width, per_segment):
            slab = self.slabs[name] = Slab(width, per_segment=per_segment)
        for fd in fds:
            slab.attach(fd)

    def render(self, updates: list[Update], openmetrics: bool) -> list[bytes]:
        """Apply each family's update, then render the family (unchanged blocks reused)."""
        return [piece for family in self.families(updates, openmetrics) for piece in family]

    def families(self, updates: list[Update], openmetrics: bool) -> Iterator[list[bytes]]:
        """``render``, a family at a time: each is applied and rendered as it is asked for."""
        for spec, restart, keys, positions, changed in updates:
            out: list[bytes] = []
            if spec.width:
                family = self._rows_family(spec, restart, keys, positions, changed, openmetrics)
                family.render(out, openmetrics)
                yield out
                continue
            old_keys, old = ([], []) if restart else self._series.get(spec.name, ([], []))
            # New lists: the family's cache keeps the ones it rendered, to compare with.
            values = old + [None] * len(keys)
            for i, value in zip(positions, changed, strict=True):
                values[i] = value
            keys = old_keys + keys if keys else old_keys
            self._series[spec.name] = (keys, values)
            family = build(spec, self.caches)
            assert isinstance(family, ScalarFamily)
            family.render_series(out, openmetrics, keys, values)
            yield out

    def _rows_family(
        self,
        spec: Spec,
        restart: bool,
        keys: list[Key],
        positions: list[int],
        changed: list,
        openmetrics: bool,
    ) -> RowsFamily:
        """The family with its update applied, to render in the format asked for.

        Exemplars are shown in OpenMetrics only, and a row's exemplar may come a scrape
        after the cells it goes with were read (the process reads them as the consumer
        writes them): the rows of every exemplar that came since the last OpenMetrics
        scrape are rendered again at the next one, their cells changed or not.
        """
        name = spec.name
        slab = self.slabs.get(name)
        if slab is None:  # no series yet, so no segment
            slab = self.slabs[name] = Slab(spec.width)
        old = [] if restart else self._rows.get(name, [])
        keys = old + keys if keys else old
        marks = [] if restart else self._marks.get(name, [])
        unshown = set() if restart else self._unshown.get(name, set())
        unshown.update(positions)
        marks.extend([None] * (len(keys) - len(marks)))
        for i, mark in zip(positions, changed, strict=True):
            marks[i] = mark
        self._rows[name], self._marks[name] = keys, marks
        self._unshown[name] = set() if openmetrics else unshown
        if len(keys) > slab.rows:
            raise ValueError(f"{name} has {len(keys)} series, its segments {slab.rows} rows")
        family = build(spec, self.caches, slab)
        assert isinstance(family, RowsFamily)
        family.keys = keys
        family.forced = frozenset(unshown if openmetrics else ())
        if isinstance(family, HistogramFamily):
            family.marks = marks
        return family

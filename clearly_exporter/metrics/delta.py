"""What changed in the engine's families since the last scrape, and a copy kept from it.

The render process holds a copy of every family's series; each scrape the exporter sends
it only the difference from what it sent last: series appended, and values changed, by
position. Under a steady load a few thousand of ~90,000 series change between two
scrapes, so that is a small fraction of the state. Where the engine marks what changed
(histograms), the marks are sent; the other families are compared with what was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import compress
from operator import is_not

from clearly_exporter.metrics.exposition import CachedFamily, Caches, Key, Spec, build

#: A family's change: its spec, whether its series start over (keys no longer a
#: continuation of the ones sent), keys appended, the positions of values that changed or
#: are new, and those values. Two lists, not a list of (position, value) pairs: ~25,000
#: pairs a scrape under load were as many objects made and tracked by the cyclic
#: collector under the engine lock, pickled, and unpickled again.
Update = tuple[Spec, bool, list[Key], list[int], list]
#: Per family name, its keys and values as sent last, and the engine's generation of
#: them (None if it marks no changes).
Sent = dict[str, tuple[list[Key], list, int | None]]
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

    With the engine's marks of the generation after the one sent, only the positions
    marked are sent (the engine only appends series, and marks new ones too); without,
    every series is compared.
    """
    spec, keys, values = family.spec, family.keys, family.values
    before = sent.get(spec.name)
    generation, marked = family.changes or (None, [])
    if generation is not None and before is not None and before[2] == generation - 1:
        restart, new, positions = False, keys[len(before[0]) :], marked
        changed = [values[i] for i in marked]
    else:
        restart, new, positions, changed = changes(keys, values, before and before[:2])
    sent[spec.name] = (keys, values, generation)
    return spec, restart, new, positions, changed


class Series:
    """The render process's copy of every family's series, and their rendered blocks."""

    def __init__(self) -> None:
        self.caches = Caches()
        #: Per family name, its keys and values.
        self._series: dict[str, tuple[list[Key], list]] = {}

    def render(self, updates: list[Update], openmetrics: bool) -> list[bytes]:
        """Apply each family's update, then render the family (unchanged blocks reused)."""
        return [piece for family in self.families(updates, openmetrics) for piece in family]

    def families(self, updates: list[Update], openmetrics: bool) -> Iterator[list[bytes]]:
        """``render``, a family at a time: each is applied and rendered as it is asked for."""
        for spec, restart, keys, positions, changed in updates:
            old_keys, old = ([], []) if restart else self._series.get(spec.name, ([], []))
            # New lists: the family's cache keeps the ones it rendered, to compare with.
            values = old + [None] * len(keys)
            for i, value in zip(positions, changed, strict=True):
                values[i] = value
            keys = old_keys + keys if keys else old_keys
            self._series[spec.name] = (keys, values)
            out: list[bytes] = []
            build(spec, self.caches).render_series(out, openmetrics, keys, values)
            yield out

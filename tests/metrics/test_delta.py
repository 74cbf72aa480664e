"""Changes alone, found by position, keep the render process's copy of every series right."""

from __future__ import annotations

from clearly_exporter.metrics import delta
from clearly_exporter.metrics.delta import Series, changes, update
from clearly_exporter.metrics.exposition import CachedFamily, HistogramFamily
from tests.metrics.test_exposition import busy_cluster
from tests.metrics.test_renderer import steps


def test_changes_alone_keep_every_block_right(monkeypatch):
    """Sent as changes over several strides, rendered in blocks of a few series."""
    monkeypatch.setattr(delta, "STRIDE", 2)
    monkeypatch.setattr(CachedFamily, "block", 2)
    monkeypatch.setattr(HistogramFamily, "block", 3)
    cluster = busy_cluster()
    series, sent = Series(), {}
    for n, _ in enumerate(steps(cluster)):
        openmetrics = n % 2 == 1
        updates, ours = [], []
        for metric in cluster.registry.collect():
            if isinstance(metric, CachedFamily):
                updates.append(update(metric, sent))
                metric.render(ours, openmetrics)
        assert series.render(updates, openmetrics) == ours


def test_only_what_changed_is_sent():
    keys = [("a",), ("b",), ("c",)]
    assert changes(keys, [1, 2, 3], None) == (True, keys, [(0, 1), (1, 2), (2, 3)])
    before = (keys, [1, 2, 3])
    assert changes(keys, [1, 2, 3], before) == (False, [], [])
    assert changes([*keys, ("d",)], [1, 5, 3, 4], before) == (False, [("d",)], [(1, 5), (3, 4)])
    assert changes(keys[::-1], [3, 2, 1], before)[0], "keys in another order start over"
    assert changes(keys[:2], [1, 2], before)[0], "keys gone start over"

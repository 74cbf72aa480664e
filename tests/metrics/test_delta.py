"""Changes alone, found by position, keep the render process's copy of every series right."""

from __future__ import annotations

from clearly_exporter.metrics import delta
from clearly_exporter.metrics.delta import Series, changes, update
from clearly_exporter.metrics.exposition import AgeFamily, CachedFamily, HistogramFamily
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


def test_ages_go_as_start_times_sent_only_when_the_oldest_task_changes():
    """Every age changes every scrape; the start times behind them seldom do."""
    cluster = busy_cluster()
    series, sent = Series(), {}

    def scrape() -> tuple[list, dict[str, float]]:
        (family,) = [m for m in cluster.registry.collect() if isinstance(m, AgeFamily)]
        change = update(family, sent)
        lines = b"".join(series.render([change], False)).decode().splitlines()
        ages = dict(line.rsplit(" ", 1) for line in lines[2:])
        return change[3], {series: float(age) for series, age in ages.items()}

    cluster.now += 7  # past the wait for task names: every task placed
    scrape()
    _, before = scrape()
    cluster.now += 3
    changed, after = scrape()
    assert changed == [], "the same oldest tasks: nothing to send"
    grown = [after[series] - age for series, age in before.items()]
    assert sorted(grown) == [0.0] * (len(grown) - 2) + [3.0, 3.0], "2 tasks in progress"

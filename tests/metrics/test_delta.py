"""Changes alone, found by position, keep the render process's copy of every series right."""

from __future__ import annotations

import pytest

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
    assert changes(keys, [1, 2, 3], None) == (True, keys, [0, 1, 2], [1, 2, 3])
    before = (keys, [1, 2, 3])
    assert changes(keys, [1, 2, 3], before) == (False, [], [], [])
    assert changes([*keys, ("d",)], [1, 5, 3, 4], before) == (False, [("d",)], [1, 3], [5, 4])
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
        return change[4], {series: float(age) for series, age in ages.items()}

    cluster.now += 7  # past the wait for task names: every task placed
    scrape()
    _, before = scrape()
    cluster.now += 3
    changed, after = scrape()
    assert changed == [], "the same oldest tasks: nothing to send"
    grown = [after[series] - age for series, age in before.items()]
    expected = [0.0] * (len(grown) - 2) + [3.0, 3.0]
    assert sorted(grown) == pytest.approx(expected), "2 tasks in progress"


def test_histograms_go_as_the_engines_marks_or_in_full_after_a_generation_missed(compared):
    """While every scrape is sent, a histogram family sends the positions the engine
    marked, compared with nothing; after a scrape that was not sent (rendered in the
    exporter meanwhile), it is compared in full. The render process stays right."""
    cluster = busy_cluster()
    series, sent = Series(), {}

    def scrape(send: bool = True) -> tuple[dict[str, list], set[str]]:
        compared.clear()
        families = [m for m in cluster.registry.collect() if isinstance(m, HistogramFamily)]
        updates, ours = [], []
        for family in families:
            if send:
                updates.append(update(family, sent))
            family.render(ours, False)
        if send:  # in pieces cut otherwise where the two rendered different scrapes
            assert b"".join(series.render(updates, False)) == b"".join(ours)
        full = {f.name for f in families if any(keys is f.keys for keys in compared)}
        return {spec.name: changed for spec, _, _, _, changed in updates}, full

    names = {"celery_task_runtime_seconds", "celery_task_queue_wait_seconds"}
    assert scrape()[1] >= names, "nothing sent yet: in full"
    cluster.task("f", name="app.slow")
    changed, full = scrape()
    assert full == set()
    assert [len(changed[name]) for name in sorted(names)] == [1, 1], "app.slow's alone"
    assert changed["celery_task_prefetch_wait_seconds"] != []
    assert scrape()[0]["celery_task_runtime_seconds"] == [], "nothing observed since"
    cluster.task("g", name="app.new", queue="q2")
    scrape(send=False)
    cluster.task("h")
    assert scrape()[1] >= names, "a generation missed: compared in full"
    cluster.task("i", name="app.new", queue="q2")
    assert scrape()[1] == set()

"""Changes alone, found by position, keep the render process's copy of every series right;
families of slab rows send only the keys they gained and the exemplars that changed."""

from __future__ import annotations

import os

import pytest

from clearly_exporter.engine.histogram import DURATION_BUCKETS
from clearly_exporter.metrics import delta
from clearly_exporter.metrics.delta import Series, changes, update
from clearly_exporter.metrics.exposition import CachedFamily, generate
from clearly_exporter.metrics.rows import AgeFamily, HistogramFamily, RowsFamily
from tests.metrics.test_exposition import OPENMETRICS, busy_cluster
from tests.metrics.test_renderer import steps


def hand_over(series: Series, family: CachedFamily, mapped: dict[str, int]) -> None:
    """As ``RenderProcess`` does: the family's segments the series has not mapped yet."""
    if isinstance(family, RowsFamily):
        slab = family.slab
        fds = [os.dup(s.file.fileno()) for s in slab.segments[mapped.get(family.name, 0) :]]
        series.attach(family.name, slab.width, slab.per_segment, fds)
        for fd in fds:
            os.close(fd)
        mapped[family.name] = len(slab.segments)


def test_changes_alone_keep_every_block_right(monkeypatch):
    """Sent as changes over several strides, rendered in blocks of a few series."""
    monkeypatch.setattr(delta, "STRIDE", 2)
    monkeypatch.setattr(CachedFamily, "block", 2)
    monkeypatch.setattr(HistogramFamily, "block", 2)
    cluster = busy_cluster()
    series, sent, mapped = Series(), {}, {}
    for n, _ in enumerate(steps(cluster)):
        openmetrics = n % 2 == 1
        updates, ours = [], []
        for metric in cluster.registry.collect():
            if isinstance(metric, CachedFamily):
                updates.append(update(metric, sent))
                hand_over(series, metric, mapped)
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


def test_rows_send_the_keys_they_gained_and_the_exemplars_that_changed():
    cluster = busy_cluster()
    series, sent, mapped = Series(), {}, {}

    def scrape() -> dict[str, tuple]:
        updates, ours = [], []
        families = [m for m in cluster.registry.collect() if isinstance(m, RowsFamily)]
        for family in families:
            updates.append(update(family, sent))
            hand_over(series, family, mapped)
            family.render(ours, True)
        assert series.render(updates, True) == ours
        return {
            spec.name: (restart, keys, positions) for spec, restart, keys, positions, _ in updates
        }

    first = scrape()
    assert all(restart for restart, _, _ in first.values()), "all of it, the first time"
    runtime = first["celery_task_runtime_seconds"]
    assert len(runtime[2]) == len(runtime[1]) >= 2, "every exemplar the engine holds"
    cluster.task("f")
    second = scrape()
    assert not any(restart or keys for restart, keys, _ in second.values()), "no new series"
    assert second["celery_task_runtime_seconds"][2] == [0], "app.add's exemplar alone"
    assert second["celery_tasks"][2] == [], "values are read where they are"
    cluster.task("f2")
    generate(cluster.registry, OPENMETRICS)  # a table not sent: rendered here
    cluster.task("f3", name="app.slow")
    again = scrape()["celery_task_runtime_seconds"]
    assert again[1] == [("app.slow", "q1", "SUCCESS")]
    assert again[2] == [0, 1, 2], "a table missed: every exemplar again, not app.slow's alone"
    cluster.task("g", name="app.new", queue="q2")
    third = scrape()
    assert third["celery_tasks"][1] == [
        (name, "q2", state)
        for name, state in [
            ("app.new", "PENDING"),
            ("app.new", "RECEIVED"),
            ("app.new", "STARTED"),
            ("app.new", "SUCCESS"),
        ]
    ]


def test_ages_grow_with_nothing_sent():
    """Every age changes every scrape; the start times behind them are read in the slab."""
    cluster = busy_cluster()
    series, sent, mapped = Series(), {}, {}

    def scrape() -> tuple[tuple, dict[str, float]]:
        (family,) = [m for m in cluster.registry.collect() if isinstance(m, AgeFamily)]
        change = update(family, sent)
        hand_over(series, family, mapped)
        lines = b"".join(series.render([change], False)).decode().splitlines()
        ages = dict(line.rsplit(" ", 1) for line in lines[2:])
        return change[1:], {series: float(age) for series, age in ages.items()}

    cluster.now += 7  # past the wait for task names: every task placed
    scrape()
    _, before = scrape()
    cluster.now += 3
    change, after = scrape()
    assert change == (False, [], [], []), "nothing to send"
    grown = [after[series] - age for series, age in before.items()]
    expected = [0.0] * (len(grown) - 2) + [3.0, 3.0]
    assert sorted(grown) == pytest.approx(expected), "2 tasks in progress"


def test_a_family_with_more_series_than_its_segments_hold_is_refused():
    cluster = busy_cluster()
    (family,) = [
        m for m in cluster.registry.collect() if m.name == "celery_task_queue_wait_seconds"
    ]
    with pytest.raises(ValueError, match="segments"):
        Series().render([update(family, {})], False)


def test_an_exemplar_sent_with_a_text_scrape_shows_at_the_next_openmetrics_one():
    """It may come a scrape after its cells were read: the row is rendered again in
    OpenMetrics, its cells changed or not."""
    cluster = busy_cluster()
    series, sent, mapped = Series(), {}, {}

    def runtime(openmetrics: bool, late: list | None = None) -> bytes:
        (family,) = [m for m in cluster.registry.collect() if m.name.endswith("runtime_seconds")]
        spec, restart, keys, positions, changed = update(family, sent)
        hand_over(series, family, mapped)
        if late is not None:
            positions, changed = [0], [late]
        return b"".join(series.render([(spec, restart, keys, positions, changed)], openmetrics))

    runtime(True)
    late = [("f" * 32, 0.07, 5.0)] * (len(DURATION_BUCKETS) + 1)
    assert b"f" * 32 not in runtime(False, late), "text shows no exemplar"
    assert b'trace_id="' + b"f" * 32 + b'"} 0.07 5.0' in runtime(True)
    assert b"f" * 32 in runtime(True), "kept once shown"

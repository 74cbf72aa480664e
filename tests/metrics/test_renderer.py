"""The render process: the same body as rendering in the exporter's own process, kept up
to date by changes alone, and a scrape served whatever becomes of the process."""

from __future__ import annotations

import os
import signal

import pytest

from clearly_exporter.metrics import renderer as renderer_module
from clearly_exporter.metrics.bodyfile import body_file
from clearly_exporter.metrics.exposition import (
    CachedFamily,
    HistogramFamily,
    ScalarFamily,
    generate,
    generate_chunks,
)
from clearly_exporter.metrics.renderer import RenderProcess, Series, changes, update
from tests.engine.events import worker_event
from tests.metrics.test_exposition import OPENMETRICS, SCRAPE_DURATION, Cluster, busy_cluster
from tests.support import wait_for


def lines(body: bytes) -> list[bytes]:
    """The body's lines but the scrape's own duration, which differs between two."""
    return [line for line in body.splitlines() if SCRAPE_DURATION.encode() not in line]


def scrape(renderer: RenderProcess, cluster: Cluster, accept: str) -> bytes:
    with body_file() as body:
        size, content_type = renderer.scrape(cluster.registry, accept, body.fileno())
        assert content_type == generate(cluster.registry, accept)[1]
        body.seek(0)
        data = body.read()
    assert len(data) == size
    return data


def steps(cluster: Cluster):
    """State changes each family sees: values, new series, gone and reordered series."""
    yield
    cluster.task("f")
    yield
    cluster.task("g", name="app.new", queue="q2")
    cluster.now += 7
    yield
    cluster.feed(worker_event("worker-heartbeat", "celery@w0", cluster.now))
    yield
    cluster.feed(worker_event("worker-offline", "celery@w1", cluster.now))
    cluster.engine.workers.purge_after = 0.0
    cluster.now += 1
    yield
    for i in range(7):
        cluster.task(f"n{i}", name=f"app.t{i % 3}", queue=f"q{i % 2}", fail=i % 4 == 0)
        yield


@pytest.fixture
def renderer():
    process = RenderProcess()
    yield process
    process.stop()


def test_the_render_process_writes_what_this_process_renders(renderer):
    cluster = busy_cluster()
    for n, _ in enumerate(steps(cluster)):
        accept = OPENMETRICS if n % 3 == 1 else ""
        assert lines(scrape(renderer, cluster, accept)) == lines(
            generate(cluster.registry, accept)[0]
        )
    assert renderer.failures == 0
    pid = renderer.pid
    assert pid is not None and pid != os.getpid()


def test_changes_alone_keep_every_block_right(monkeypatch):
    """Sent as changes over several strides, rendered in blocks of a few series."""
    monkeypatch.setattr(renderer_module, "STRIDE", 2)
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


def test_a_dead_render_process_is_replaced_and_no_scrape_is_lost(renderer):
    cluster = busy_cluster()
    scrape(renderer, cluster, "")
    first = renderer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    cluster.task("f")
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert renderer.failures == 1
    cluster.task("g")
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert renderer.pid not in (None, first)
    assert renderer.failures == 1


def test_after_stop_the_process_is_gone_and_scrapes_render_here(renderer):
    cluster = busy_cluster()
    scrape(renderer, cluster, "")
    pid = renderer.pid
    renderer.stop()
    assert renderer.pid is None
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the render process to exit")
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert renderer.pid is None and renderer.failures == 0


def test_a_render_error_is_reported_and_the_scrape_rendered_here(renderer, monkeypatch, caplog):
    """Whatever the process cannot render, the exporter renders itself."""
    cluster = busy_cluster()
    spec = ScalarFamily.spec.fget
    monkeypatch.setattr(ScalarFamily, "spec", property(lambda f: (*spec(f)[:4], ("x",), (), False)))
    body = scrape(renderer, cluster, "")
    assert lines(body) == lines(b"".join(generate_chunks(cluster.registry, "")[0]))
    assert renderer.failures == 1
    assert "rendering here instead" in caplog.text and "ValueError" in caplog.text


def test_a_render_process_that_hangs_is_given_up_on(renderer, monkeypatch):
    monkeypatch.setattr(renderer_module, "RENDER_TIMEOUT", 0.5)
    cluster = busy_cluster()
    scrape(renderer, cluster, "")
    stuck = renderer.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)
    try:
        assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
        assert renderer.failures == 1
        wait_for(lambda: not os.path.exists(f"/proc/{stuck}"), 5, "the stuck process killed")
    finally:
        if os.path.exists(f"/proc/{stuck}"):
            os.kill(stuck, signal.SIGKILL)

"""Queue depth at scrape time: Redis priority sub-lists, AMQP ready messages/consumers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis
from celery import Celery

from clearly_exporter.brokers import connection_config, transport_for
from clearly_exporter.metrics.queues import QueueProbe
from tests.support import Exporter, select, wait_for


def backlog(broker: str, queue: str, n: int) -> None:
    """``n`` messages on ``queue``, no worker consuming, spread over priorities."""
    url, options = connection_config(broker)
    app = Celery("backlog", set_as_current=False)
    app.conf.update(
        broker_url=url, broker_transport=transport_for(url), broker_transport_options=options
    )
    for i in range(n):
        app.send_task("demo.add", (i, i), queue=queue, priority=[0, 3, 6, 9][i % 4])


def hold(probe: QueueProbe, release: threading.Event, monkeypatch) -> None:
    """From now on the probe's broker work waits until ``release`` is set."""
    declare = probe._declare

    def slow(queues: list[str]):
        release.wait(10)
        return declare(queues)

    monkeypatch.setattr(probe, "_declare", slow)


def test_queue_length_counts_the_whole_backlog(broker: str, queue: str, tmp_path: Path, cleanup):
    exporter = Exporter(broker, tmp_path, ["--queue", queue])
    cleanup.append(exporter.start())
    assert select(exporter.scrape(), "celery_queue_length", queue=queue) == {(): 0.0}
    backlog(broker, queue, 11)
    samples = wait_for(
        lambda: (
            (s := exporter.scrape())
            and select(s, "celery_queue_length", queue=queue) == {(): 11.0}
            and s
        ),
        30,
        "queue length 11",
    )
    consumers = select(samples, "celery_queue_consumers", queue=queue)
    assert consumers == ({(): 0.0} if broker.startswith("amqp") else {})
    assert select(samples, "clearly_exporter_broker_scrape_errors_total") == {(): 0.0}


def test_broker_down_during_a_scrape_omits_series_and_counts(tmp_path: Path, cleanup):
    exporter = Exporter("redis://127.0.0.1:1/0", tmp_path, ["--queue", "celery"])
    cleanup.append(exporter.start(wait_healthy=False))
    samples = exporter.scrape()
    assert select(samples, "celery_queue_length") == {}
    assert select(samples, "clearly_exporter_broker_scrape_errors_total")[()] >= 1


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_probe_reports_empty_and_missing_queues_as_zero(broker: str):
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None)
    try:
        depths = probe.depths(["never-declared"])
    finally:
        probe.close()
    assert [(d.name, d.length) for d in depths] == [("never-declared", 0)]
    assert probe.errors == 0


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_slow_probe_serves_the_last_depths_then_gives_up(broker: str, queue: str, monkeypatch):
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None, timeout=1.0, fresh_wait=0.05)
    release = threading.Event()
    try:
        assert [d.length for d in probe.depths([queue])] == [0]
        backlog(broker, queue, 3)
        hold(probe, release, monkeypatch)
        started = time.monotonic()
        assert [d.length for d in probe.depths([queue])] == [0]  # the last, not waited for
        assert time.monotonic() - started < 0.5
        assert probe.errors == 0
        release.set()
        wait_for(lambda: probe.depths([queue])[0].length == 3, 5, "the background result")
        release.clear()
        probe.depths([queue])  # starts a measurement that hangs
        assert probe.depths([queue]) is not None  # still within its deadline
        wait_for(lambda: probe.depths([queue]) is None, 5, "the deadline passed")
        assert probe.errors >= 1
    finally:
        release.set()
        probe.close()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_probe_failing_in_the_background_is_counted(broker: str, queue: str, monkeypatch):
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None, timeout=1.0, fresh_wait=0.05)
    declare = probe._declare

    def failing(queues: list[str]):
        time.sleep(0.2)
        raise ConnectionError("broker gone")

    try:
        assert [d.length for d in probe.depths([queue])] == [0]
        monkeypatch.setattr(probe, "_declare", failing)
        assert [d.length for d in probe.depths([queue])] == [0]  # the last, while it fails
        wait_for(lambda: probe.errors == 1, 5, "the failure counted")
        assert probe.depths([queue]) is None  # nothing left to serve: it failed
        monkeypatch.setattr(probe, "_declare", declare)
        wait_for(lambda: probe.depths([queue]) is not None, 5, "depths again")
    finally:
        probe.close()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_probe_of_other_queues_never_answers_for_these(broker: str, queue: str, monkeypatch):
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None, timeout=2.0, fresh_wait=0.5)
    both = sorted([queue, f"{queue}-other"])
    declare, started, release = probe._declare, threading.Event(), threading.Event()

    def slow(queues: list[str]):
        started.set()
        release.wait(10)
        return declare(queues)

    try:
        assert [d.name for d in probe.depths(both)] == both
        monkeypatch.setattr(probe, "_declare", slow)
        threading.Thread(target=probe.depths, args=([queue],), daemon=True).start()
        assert started.wait(5)
        threading.Timer(0.05, release.set).start()  # ends while the next scrape waits
        assert [d.name for d in probe.depths(both)] == both  # its last, not the other set's
        wait_for(lambda: probe.depths([queue]) is not None, 5, "its own probe")
        assert [d.name for d in probe.depths([queue])] == [queue]
    finally:
        release.set()
        probe.close()


def test_missing_and_present_queues_probed_again_and_again(broker: str, queue: str):
    """AMQP closes the channel on a passive declare of a missing queue: the next queue
    and the next probe still get their depths."""
    backlog(broker, queue, 3)
    names = sorted([f"{queue}-missing-a", queue, f"{queue}-missing-b"])
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None)
    try:
        for _ in range(3):
            depths = probe._measure(names)
            assert {d.name: d.length for d in depths} == {
                queue: 3,
                f"{queue}-missing-a": 0,
                f"{queue}-missing-b": 0,
            }
    finally:
        probe.close()
    assert probe.errors == 0


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_probes_reuse_one_connection(broker: str, queue: str):
    """A connection per queue per probe cost ~25 ms of handshakes a scrape."""
    url, options = connection_config(broker)
    server = redis.Redis.from_url(url)
    probe = QueueProbe(url, options, None)
    queues = [f"{queue}-{k}" for k in range(4)]
    try:
        probe._measure(queues)
        before = server.info("stats")["total_connections_received"]
        for _ in range(10):
            probe._measure(queues)
        opened = server.info("stats")["total_connections_received"] - before
    finally:
        probe.close()
        server.close()
    assert opened < 10


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_probe_started_before_rendering_is_the_one_served(broker: str, queue: str, monkeypatch):
    """The collector starts the probe, renders, then takes its result: a probe that ended
    meanwhile is served, not followed by another the scrape would wait for."""
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None, timeout=2.0, fresh_wait=0.0)
    declare, calls = probe._declare, []

    def counted(queues: list[str]):
        calls.append(queues)
        return declare(queues)

    monkeypatch.setattr(probe, "_declare", counted)
    try:
        probing = probe.start([queue])
        wait_for(lambda: probing.running.done(), 5, "the probe")
        backlog(broker, queue, 2)
        assert [d.length for d in probe.result(probing)] == [0]
        assert calls == [[queue]]
    finally:
        probe.close()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_long_render_does_not_use_up_the_probe_deadline(broker: str, queue: str, monkeypatch):
    """The probe starts before the render; its deadline counts from when the scrape asks
    for it, so a render nearly as long as the deadline still gets the last depths."""
    url, options = connection_config(broker)
    probe = QueueProbe(url, options, None, timeout=0.5, fresh_wait=0.05)
    release = threading.Event()
    try:
        assert [d.length for d in probe.depths([queue])] == [0]
        hold(probe, release, monkeypatch)
        probing = probe.start([queue])
        time.sleep(0.48)  # the render
        assert [d.length for d in probe.result(probing)] == [0]
        assert probe.errors == 0
    finally:
        release.set()
        probe.close()

"""The event source on real brokers: batched bodies, bad bodies, nothing lost or raised."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from celery.events.event import get_exchange
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer

from clearly_exporter import source as source_module
from clearly_exporter.brokers import connection_config, transport_for
from clearly_exporter.engine import Engine
from clearly_exporter.source import EventSource, SourceConfig
from tests.engine.events import received
from tests.support import Exporter, Worker, free_port, select, wait_for, wait_worker_up


def publish(broker: str, bodies: list[tuple[object, dict]]) -> None:
    """Publish raw event bodies on the event exchange, as workers do."""
    url, options = connection_config(broker)
    with Connection(url, transport=transport_for(url), transport_options=options) as conn:
        producer = Producer(conn.channel(), exchange=get_exchange(conn))
        for body, kwargs in bodies:
            producer.publish(body, routing_key="task.multi", **kwargs)


def test_batched_bodies_and_bad_neighbours(broker: str, tmp_path: Path, cleanup):
    exporter = Exporter(broker, tmp_path)
    cleanup.append(exporter.start())
    name = f"t.{uuid.uuid4().hex[:8]}"
    now = time.time()
    good = [
        {"type": "task-received", "uuid": f"u{i}", "name": name, "timestamp": now, "retries": 0}
        for i in range(5)
    ]
    batch = [good[0], "garbage", {"type": "task-received"}, good[1], 42, good[2]]
    raw = {"content_type": "application/json", "content_encoding": "utf-8"}
    bodies = [
        (batch, {"serializer": "json"}),
        (good[3], {"serializer": "json"}),
        (b"{not json", raw),
        (b"\x80\x04\x95 pickle", {**raw, "content_type": "application/x-python-serialize"}),
        ([good[4]], {"serializer": "json"}),
    ]
    # The consumer may need a moment after /healthz to be bound on every transport:
    # republish the probe until it is seen, then the real bodies once.
    probe = {"type": "worker-heartbeat", "hostname": "probe@x", "timestamp": now, "freq": 2.0}

    def bound() -> bool:
        publish(broker, [(probe, {"serializer": "json"})])
        return bool(select(exporter.scrape(), "celery_worker_up", worker="probe@x"))

    wait_for(bound, 30, "consumer bound", every=0.5)
    publish(broker, bodies)

    def received() -> float:
        samples = exporter.scrape()
        return select(samples, "celery_tasks_total", name=name, state="RECEIVED").get(
            (("queue", "celery"),), 0
        )

    wait_for(lambda: received() == 5, 30, "five good events")
    samples = exporter.scrape()
    assert select(samples, "clearly_exporter_events_invalid_total") == {(): 5.0}
    assert exporter.proc.popen.poll() is None


@pytest.mark.parametrize("broker", ["amqp"], indirect=True)
def test_named_event_queue_keeps_events_while_the_exporter_is_away(
    broker: str, queue: str, tmp_path: Path, cleanup
):
    event_queue = f"celeryev.test-{uuid.uuid4().hex[:8]}"
    args = ["--event-queue", event_queue, "--event-queue-expires", "5m"]
    first = Exporter(broker, tmp_path, args).start()
    cleanup.append(first)
    worker = Worker(broker, queue, tmp_path, backend="rpc://")
    cleanup.append(worker.start())
    wait_worker_up(first, worker)
    assert first.stop() == 0
    app = Celery("test-producer", set_as_current=False)
    app.conf.update(broker_url=broker, result_backend="rpc://", task_send_sent_event=True)
    results = [app.send_task("demo.add", (i, i), queue=queue) for i in range(20)]
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(20)]
    second = Exporter(broker, tmp_path, args)
    cleanup.append(second.start())

    def counted(state: str) -> float:
        counts = select(second.scrape(), "celery_tasks_total", queue=queue, state=state)
        return counts.get((("name", "demo.add"),), 0)

    wait_for(lambda: counted("SUCCESS") == 20, 60, "all 20 tasks counted after the restart")
    assert counted("PENDING") == 20, "task-sent events published while away were kept"
    second.stop()
    with Connection(broker) as conn:
        conn.default_channel.queue_delete(event_queue)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | st.just(b'[{"type": "task-received", "uuid": "x"}, 1, "a", {"type": null}]'),
    content_type=st.sampled_from(["application/json", "application/x-python-serialize", None]),
)
@example(body=b"[]", content_type="application/json")
def test_any_body_is_decoded_or_counted_never_raised(body: bytes, content_type: str | None):
    engine = Engine()
    source = EventSource(SourceConfig("memory://", {}), engine, clock=lambda: 1.0)
    source._on_message(SimpleNamespace(content_type=content_type, body=body))
    snap = engine.snapshot(1.0)
    assert snap.events_invalid + sum(snap.events.values()) >= 1


def test_a_batch_keeps_good_events_next_to_bad_ones():
    engine = Engine()
    source = EventSource(SourceConfig("memory://", {}), engine, clock=lambda: 1.0)
    body = b'[{"type": "task-received", "uuid": "a", "name": "n"}, 7, {"uuid": "b"}, "\\u0000"]'
    source._on_message(SimpleNamespace(content_type="application/json", body=body))
    assert engine.task("a").state == "RECEIVED"
    assert engine.events_invalid == 3


class BrokenEngine:
    """An engine whose ``ingest`` has a bug; the rest is a real engine's (a compiled
    engine's methods cannot be patched, nor its class subclassed)."""

    def __init__(self) -> None:
        self.engine = Engine()

    def ingest(self, events: object, now: float) -> None:
        raise RuntimeError("engine bug")

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)


def test_an_engine_error_is_counted_not_taken_for_a_broker_failure(caplog):
    engine = BrokenEngine()
    source = EventSource(SourceConfig("memory://", {}), engine, clock=lambda: 1.0)
    body = b'{"type": "task-received", "uuid": "a", "name": "n"}'
    source._on_message(SimpleNamespace(content_type="application/json", body=body))
    assert engine.events_invalid == 1
    assert "could not apply" in caplog.text


def test_a_killed_exporters_filesystem_queue_is_removed_by_the_next_one(tmp_path: Path, cleanup):
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = f"filesystem://{folder}"
    bindings = folder / "control" / "celeryev.exchange"

    def queues() -> list[str]:
        return [q for _, _, q in json.loads(bindings.read_text())] if bindings.exists() else []

    def files_of(queue: str) -> list[str]:
        return [p.name for p in (folder / "data").iterdir() if p.name.endswith(f".{queue}.msg")]

    first = Exporter(broker, tmp_path)
    cleanup.append(first.start())
    (dead,) = wait_for(queues, 30, "the first exporter's binding")
    first.proc.stop(signal.SIGKILL)
    publish(broker, [(received(str(uuid.uuid4()), time.time()), {"serializer": "json"})])
    assert queues() == [dead] and len(files_of(dead)) == 1, "the binding outlives a SIGKILL"

    second = Exporter(broker, tmp_path)
    cleanup.append(second.start())
    (alive,) = wait_for(lambda: [q for q in queues() if q != dead], 30, "the second's binding")
    assert queues() == [alive] and files_of(dead) == []
    assert "removed the event queues of 1 killed exporter(s)" in second.proc.output()


def test_the_engine_ticks_on_while_the_broker_is_away():
    """Spans are handed over and workers purged on the tick: an outage must not stop it."""
    engine = Engine()
    ticks: list[float] = []
    engine.on_tick(ticks.append)
    port = free_port()  # nothing listens there
    source = EventSource(SourceConfig(f"redis://127.0.0.1:{port}/0", {}), engine)
    source.start()
    try:
        wait_for(lambda: source.health.reason, 10, "the source to find the broker away")
        wait_for(lambda: len(ticks) >= 3, 10, "ticks while the broker is away")
        assert not source.health.connected
    finally:
        source.stop()
        source.join(10)
    assert not source.is_alive()


def test_a_broker_that_stays_away_is_reported_again_while_it_is_retried(monkeypatch, caplog):
    """One warning then silence would read like an exporter that gave up; a warning at
    every retry (1 s, then 2 s, ...) would flood the log."""
    monkeypatch.setattr(source_module, "REMIND_EVERY", 2.5)
    port = free_port()  # nothing listens there
    source = EventSource(SourceConfig(f"redis://127.0.0.1:{port}/0", {}), Engine())
    source.start()
    try:
        wait_for(lambda: "still unavailable after" in caplog.text, 20, "a second report")
    finally:
        source.stop()
        source.join(10)
    told = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(told) == 2, "the retry at 1 s is not reported"
    first, again = (r.getMessage() for r in told)
    assert first.startswith(f"broker redis://127.0.0.1:{port}/0 unavailable: ")
    assert first.endswith("; retrying")
    assert " still unavailable after " in again and "; retrying every " in again
    assert told[1].created - told[0].created >= 2.5

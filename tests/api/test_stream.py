"""The live stream on a real exporter and broker, fed raw events in the order a test picks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.api.sse import StreamReader, StreamSocket, parse
from tests.cluster import api_get, private_redis, publish
from tests.engine.events import received, started, succeeded, worker_event
from tests.support import Exporter, wait_for


@pytest.fixture
def broker() -> str:
    """Redis, in a database of its own: only this test's events reach its exporter."""
    return private_redis()


def bound(broker: str, reader: StreamReader) -> None:
    """Wait until the exporter consumes: a probe heartbeat comes back on the stream."""
    probe = f"probe-{uuid.uuid4().hex[:6]}@x"

    def seen(r: StreamReader) -> bool:
        publish(broker, [worker_event("worker-heartbeat", probe, time.time())])
        return any(w["hostname"] == probe for w in r.events("worker"))

    wait_for(lambda: seen(reader), 30, "the exporter consuming", every=0.3)


def started_exporter(broker: str, tmp_path: Path, cleanup) -> Exporter:
    exporter = Exporter(broker, tmp_path)
    cleanup.append(exporter.start())
    return exporter


def states(reader: StreamReader, name: str) -> list[tuple[str, str, bool]]:
    tasks = reader.events("task")
    return [(t["uuid"], t["state"], t["inferred"]) for t in tasks if t["name"] == name]


def test_every_client_gets_transitions_in_inferred_order(broker: str, tmp_path: Path, cleanup):
    exporter = started_exporter(broker, tmp_path, cleanup)
    name = f"t.{uuid.uuid4().hex[:8]}"
    everything = StreamReader(exporter.url)
    only_these = StreamReader(exporter.url, f"?tasks={name.upper()}&workers=.&negate_workers=1")
    all_but = StreamReader(exporter.url, f"?tasks={name}&negate_tasks=true")
    for reader in (everything, only_these, all_but):
        cleanup.append(reader)
    bound(broker, everything)
    x, y, now = "x-" + uuid.uuid4().hex, "y-" + uuid.uuid4().hex, time.time()
    publish(broker, [succeeded(x, now + 0.3), started(x, now + 0.2)])
    publish(broker, [[received(x, now + 0.1, name=name), received(y, now + 0.1, name=name)]])
    publish(broker, [succeeded(y, now + 0.3), started(y, now + 0.2)])
    marker = received("m-" + uuid.uuid4().hex, now, name="t.marker")
    publish(broker, [marker])

    expected = [
        (x, "RECEIVED", True),
        (x, "STARTED", True),
        (x, "SUCCESS", False),
        (y, "RECEIVED", False),
        (y, "STARTED", True),
        (y, "SUCCESS", False),
    ]
    for reader in (everything, only_these):
        reader.wait(lambda r: states(r, name) == expected, "six transitions in inferred order")
    all_but.wait(lambda r: states(r, "t.marker"), "the marker published after them")
    assert states(all_but, name) == []
    assert only_these.events("worker") == [] and states(only_these, "t.marker") == []
    success = next(t for t in everything.events("task") if t["state"] == "SUCCESS")
    assert success["result"] == "3" and success["args"] == "(1, 2)" and success["retries"] == 0
    _, stats = api_get(exporter.url, "/api/stats")
    assert stats["stream_clients"] == 3 and stats["stream_cutoffs"] == 0
    assert exporter.stop() == 0
    for reader in (everything, only_these, all_but):
        reader.wait(lambda r: r.events("end"), "the end of the stream")
        assert reader.events("end") == [{"reason": "the exporter is stopping"}]


def test_worker_changes_stream_including_a_silent_worker(broker: str, tmp_path: Path, cleanup):
    exporter = started_exporter(broker, tmp_path, cleanup)
    host = f"wz{uuid.uuid4().hex[:6]}@test"
    reader = StreamReader(exporter.url, "?tasks=.&negate_tasks=1")
    cleanup.append(reader)
    bound(broker, reader)
    now = time.time()
    publish(
        broker,
        [
            worker_event("worker-online", host, now, freq=0.5),
            worker_event("worker-heartbeat", host, now + 0.5, freq=0.5),
            worker_event("worker-offline", host, now + 1.0, freq=0.5),
            worker_event("worker-heartbeat", host, now + 1.5, freq=0.5),
        ],
    )

    def seen(r: StreamReader) -> list[tuple[str, str]]:
        return [(w["event"], w["state"]) for w in r.events("worker") if w["hostname"] == host]

    # Silent for 3 x 0.5 s after its last heartbeat: the stream says so, no event did.
    reader.wait(lambda r: len(seen(r)) == 5, "the timeout", timeout=15)
    assert seen(reader) == [
        ("online", "ONLINE"),
        ("heartbeat", "ONLINE"),
        ("offline", "OFFLINE"),
        ("heartbeat", "ONLINE"),
        ("timeout", "OFFLINE"),
    ]


def storm(name: str, tasks: int) -> list[list[dict]]:
    """Three events per task, in batches as busy workers send them."""
    now, pad = time.time(), "x" * 300
    events = []
    for i in range(tasks):
        uid = f"{name}-{i}"
        events += [
            received(uid, now, name=name, args=f"('{pad}', {i})"),
            started(uid, now),
            succeeded(uid, now),
        ]
    return [events[i : i + 600] for i in range(0, len(events), 600)]


def timed_storm(broker: str, exporter: Exporter, tasks: int) -> float:
    """Seconds from publishing a storm to the exporter having processed all of it."""
    bodies = storm(f"s.{uuid.uuid4().hex[:6]}", tasks)

    def processed() -> int:
        return api_get(exporter.url, "/api/stats")[1]["events_processed"]

    target = processed() + 3 * tasks
    begun = time.monotonic()
    publish(broker, bodies)
    wait_for(lambda: processed() >= target, 60, "the storm processed", every=0.05)
    return time.monotonic() - begun


def test_a_client_that_stops_reading_is_cut_off_and_the_rate_holds(
    broker: str, tmp_path: Path, cleanup
):
    exporter = started_exporter(broker, tmp_path, cleanup)
    probe = StreamReader(exporter.url, "?tasks=.&negate_tasks=1")
    bound(broker, probe)
    probe.stop()
    alone = timed_storm(broker, exporter, 8000)

    stalled = StreamSocket(exporter.url, rcvbuf=4096)
    cleanup.append(stalled)
    stalled.read_until(b"event: hello")
    wait_for(lambda: api_get(exporter.url, "/api/stats")[1]["stream_clients"] == 1, 10, "connected")
    with_stalled = timed_storm(broker, exporter, 8000)

    _, stats = api_get(exporter.url, "/api/stats")
    assert (stats["stream_cutoffs"], stats["stream_clients"]) == (1, 0)
    assert with_stalled < 2 * alone + 1.0, (alone, with_stalled)
    kind, data = parse(stalled.read_to_end())[-1]
    assert kind == "end"
    assert data["reason"].startswith("client too slow: over 2048 KiB of events waiting")

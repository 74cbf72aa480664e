"""Worker liveness: heartbeats, timeouts, graceful shutdown, purge, every event type."""

import pytest

from clearly_exporter.engine import Engine, EngineConfig
from tests.engine.events import T0, started, worker_event


def up(engine: Engine, now: float) -> dict[str, bool]:
    return {w.hostname: w.up for w in engine.snapshot(now).workers}


def test_worker_is_down_after_three_heartbeat_intervals_of_silence():
    engine = Engine()
    engine.handle(worker_event("worker-online", "celery@a", T0), T0)
    engine.handle(worker_event("worker-heartbeat", "celery@a", T0 + 2, freq=2.0), T0 + 2)
    assert up(engine, T0 + 7.9) == {"celery@a": True}
    assert up(engine, T0 + 8.1) == {"celery@a": False}


def test_worker_timeout_option_overrides_the_heartbeat_interval():
    engine = Engine(EngineConfig(worker_timeout=1.0))
    engine.handle(worker_event("worker-heartbeat", "celery@a", T0), T0)
    assert up(engine, T0 + 1.5) == {"celery@a": False}


def test_graceful_shutdown_is_down_at_once_and_stays_until_purged():
    engine = Engine(EngineConfig(worker_purge=3600))
    engine.handle(worker_event("worker-online", "celery@a", T0), T0)
    engine.handle(worker_event("worker-offline", "celery@a", T0 + 1), T0 + 1)
    assert up(engine, T0 + 1) == {"celery@a": False}
    assert up(engine, T0 + 3000) == {"celery@a": False}
    assert up(engine, T0 + 3602) == {}


def test_worker_back_online_is_up_again():
    engine = Engine()
    engine.handle(worker_event("worker-offline", "celery@a", T0), T0)
    engine.handle(worker_event("worker-online", "celery@a", T0 + 5), T0 + 5)
    assert up(engine, T0 + 6) == {"celery@a": True}


@pytest.mark.parametrize(
    "etype", ["worker-online", "worker-heartbeat", "worker-offline", "worker-elect", "worker-x"]
)
def test_every_worker_event_type_is_counted(etype):
    engine = Engine()
    engine.handle(worker_event(etype, "celery@a", T0, action="elect", topic="t"), T0)
    assert engine.events == {etype: 1}
    assert engine.events_invalid == 0
    known = etype in ("worker-online", "worker-heartbeat", "worker-offline")
    assert len(engine.workers) == (1 if known else 0)


def test_heartbeat_fields_are_kept():
    engine = Engine()
    engine.handle(worker_event("worker-heartbeat", "celery@a", T0, active=3, processed=99), T0)
    (view,) = engine.snapshot(T0).workers
    assert (view.active, view.processed, view.loadavg) == (3, 99, (0.5, 0.25, 0.1))
    assert (view.sw_ident, view.sw_ver, view.pid, view.last_heartbeat) == (
        "py-celery",
        "5.7.0",
        "42",
        T0,
    )


def test_workers_beyond_the_limit_evict_the_least_recently_seen():
    engine = Engine(EngineConfig(max_workers=2))
    for i, host in enumerate(["a", "b", "a", "c"]):
        engine.handle(worker_event("worker-heartbeat", host, T0 + i), T0 + i)
    assert set(up(engine, T0 + 4)) == {"a", "c"}


def test_task_started_events_never_received_are_estimated_from_heartbeats():
    engine = Engine()

    def beat(t: float, processed: int) -> None:
        engine.handle(worker_event("worker-heartbeat", "celery@w1", t, processed=processed), t)

    beat(T0, 100)
    for i in range(3):
        engine.handle(started(f"t{i}", T0 + 1), T0 + 1)
    beat(T0 + 2, 105)
    assert engine.workers.lost == 0, "the fresh count is not compared: events lag behind"
    for i in range(3, 5):
        engine.handle(started(f"t{i}", T0 + 3), T0 + 3)
    beat(T0 + 4, 110)
    assert engine.workers.lost == 0, "5 started by the previous heartbeat, 5 seen"
    beat(T0 + 6, 110)
    assert engine.workers.lost == 5, "10 started by then, only 5 ever seen"
    beat(T0 + 8, 3)
    beat(T0 + 10, 3)
    assert engine.workers.lost == 5, "a restarted worker starts a new baseline"
    assert engine.snapshot(T0 + 10).events_lost == 5

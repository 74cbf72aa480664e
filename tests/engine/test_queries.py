"""What the API asks of the engine: reset, listeners that come and go, worker changes."""

from clearly_exporter.engine import Engine, EngineConfig
from tests.engine.events import (
    T0,
    counts,
    failed,
    feed,
    in_progress,
    received,
    retried,
    sent,
    started,
    succeeded,
    worker_event,
)


def test_forget_finished_keeps_in_flight_and_unnamed_tasks_and_every_count():
    engine = feed(
        [
            received("done", T0),
            succeeded("done", T0 + 1),
            received("broken", T0),
            failed("broken", T0 + 1),
            received("running", T0),
            started("running", T0 + 1),
            received("again", T0),
            retried("again", T0 + 1),
            started("nameless", T0),
        ]
    )
    before = counts(engine)
    assert engine.forget_finished() == 2
    assert {rec.uuid for rec in engine.stored_tasks()} == {"running", "again", "nameless"}
    assert counts(engine) == before
    engine.handle(received("nameless", T0 - 1), T0 + 2)
    assert counts(engine)["STARTED"] == before["STARTED"] + 1
    assert in_progress(engine, T0 + 3)[("app.add", "celery", "STARTED")][0] == 2


def test_a_listener_can_leave_and_costs_nothing_after():
    engine = Engine()
    seen: list[str] = []

    def listener(tr):
        seen.append(tr.state)

    engine.subscribe(listener)
    engine.handle(received("a", T0), T0)
    engine.unsubscribe(listener)
    engine.handle(started("a", T0 + 1), T0 + 1)
    assert seen == ["RECEIVED"]


def test_worker_watcher_sees_every_change_until_removed():
    engine = Engine()
    seen: list[tuple[str, str, bool]] = []
    engine.workers.watch(lambda w, etype: seen.append((w.hostname, etype, w.offline)))
    engine.handle(worker_event("worker-online", "w@a", T0), T0)
    engine.handle(worker_event("worker-elect", "w@a", T0), T0)
    engine.handle(worker_event("worker-offline", "w@a", T0 + 1), T0 + 1)
    engine.workers.watch(None)
    engine.handle(worker_event("worker-heartbeat", "w@a", T0 + 2), T0 + 2)
    assert seen == [("w@a", "worker-online", False), ("w@a", "worker-offline", True)]


def test_children_and_seen_names():
    engine = feed(
        [
            sent("root", T0, name="app.spawn"),
            sent("kid", T0, name="app.add", parent_id="root", root_id="root"),
            sent("root", T0 + 1, name="app.spawn", retries=1, parent_id="root"),
        ]
    )
    assert engine.children("root") == ["kid"]
    assert engine.seen_task_names() == {"app.spawn", "app.add"}


def test_children_follow_moves_evictions_and_resets():
    kids = [sent(k, T0, parent_id="root", root_id="root") for k in ("k1", "k2", "k3")]
    engine = feed([sent("root", T0, name="app.spawn"), *kids], EngineConfig(max_tasks=4))
    assert engine.children("root") == ["k1", "k2", "k3"]
    engine.handle(sent("k2", T0 + 1, parent_id="other"), T0 + 1)
    assert engine.children("root") == ["k1", "k3"]
    assert engine.children("other") == ["k2"]
    engine.handle(sent("new1", T0 + 2), T0 + 2)  # evicts the least recently updated: root
    assert engine.task("root") is None
    engine.handle(sent("new2", T0 + 3), T0 + 3)  # then k1
    assert engine.children("root") == ["k3"]
    engine.handle(received("k3", T0 + 4), T0 + 4)
    engine.handle(succeeded("k3", T0 + 5), T0 + 5)
    engine.forget_finished()
    assert engine.children("root") == []
    assert engine.children("other") == ["k2"]


def test_ids_of_stored_tasks_share_their_uuid_string():
    """Memory: a child holds its parent's and root's uuid, not decoded copies of them."""
    root_id = "".join(["ro", "ot"])  # a distinct string object, as decoding gives
    engine = feed(
        [
            sent("root", T0, name="app.spawn", root_id=root_id),
            sent("kid", T0, parent_id=root_id, root_id=root_id),
        ]
    )
    root = engine.task("root")
    kid = engine.task("kid")
    assert root.root_id is root.uuid
    assert kid.parent_id is root.uuid and kid.root_id is root.uuid

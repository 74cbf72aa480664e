"""The benchmark's storm publisher builds well-formed Celery events (no broker, no timing)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType

import pytest

STORM_PY = Path(__file__).resolve().parents[2] / "bench" / "storm.py"
COMMON = ("hostname", "utcoffset", "pid", "clock", "timestamp", "type")
TASK_FIELDS = {
    "task-sent": ("uuid", "name", "args", "kwargs", "retries", "eta", "expires", "root_id",
                  "parent_id", "queue", "exchange", "routing_key"),
    "task-received": ("uuid", "name", "args", "kwargs", "retries", "eta", "expires", "root_id",
                      "parent_id"),
    "task-started": ("uuid",),
    "task-succeeded": ("uuid", "result", "runtime"),
}  # fmt: skip


def load_storm() -> ModuleType:
    """bench/ is scripts, not a package: load storm.py from its path."""
    spec = importlib.util.spec_from_file_location("bench_storm", STORM_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


storm = load_storm()
SPEC = storm.StormSpec(tasks=300, names=12, workers=4, clients=2, batch=10, rate=100.0,
                       heartbeat=0.1, seed=7)  # fmt: skip


@pytest.fixture(scope="module")
def built():
    return storm.build_storm(SPEC, now=1_700_000_000.0)


def events_of(built) -> list[dict]:
    out = []
    for message in built.messages:
        body = json.loads(message.body)
        out.extend(body if isinstance(body, list) else [body])
    return out


def test_counts_by_type(built):
    beats = int(SPEC.tasks / SPEC.rate / SPEC.heartbeat) + 1
    assert built.counts == Counter(
        {
            "task-sent": 300,
            "task-received": 300,
            "task-started": 300,
            "task-succeeded": 300,
            "worker-online": SPEC.workers,
            "worker-heartbeat": SPEC.workers * (beats - 1),
        }
    )
    assert Counter(e["type"] for e in events_of(built)) == built.counts
    assert built.events == sum(built.counts.values())


def test_bodies_are_batches_from_one_sender_and_heartbeats_are_single(built):
    for message in built.messages:
        body = json.loads(message.body)
        if message.routing_key == "task.multi":
            assert isinstance(body, list)
            limit = SPEC.sent_batch if body[0]["type"] == "task-sent" else SPEC.batch
            assert 1 <= len(body) <= limit
            assert {e["hostname"] for e in body} == {message.hostname}
        else:
            assert message.routing_key in ("worker.online", "worker.heartbeat")
            assert body["type"] == message.routing_key.replace(".", "-")
            assert body["hostname"] == message.hostname


def test_every_task_has_its_four_events_with_celery_fields(built):
    by_task: dict[str, dict[str, dict]] = defaultdict(dict)
    for event in events_of(built):
        for key in COMMON:
            assert key in event, (key, event)
        if event["type"].startswith("task-"):
            for key in TASK_FIELDS[event["type"]]:
                assert key in event, (key, event)
            by_task[event["uuid"]][event["type"]] = event
        else:
            assert re.fullmatch(r"celery@bench-\d+", event["hostname"])
            assert event["sw_ident"] == "py-celery"
            assert len(event["loadavg"]) == 3
    assert len(by_task) == SPEC.tasks
    names = set()
    for events in by_task.values():
        assert set(events) == set(TASK_FIELDS)
        sent, received = events["task-sent"], events["task-received"]
        succeeded = events["task-succeeded"]
        assert sent["name"] == received["name"]
        names.add(sent["name"])
        assert sent["routing_key"] == sent["queue"]
        assert isinstance(sent["args"], str) and isinstance(sent["kwargs"], str)
        assert isinstance(succeeded["result"], str) and succeeded["runtime"] > 0
        worker = received["hostname"]
        assert re.fullmatch(r"celery@bench-\d+", worker)
        assert events["task-started"]["hostname"] == succeeded["hostname"] == worker
        assert sent["timestamp"] < received["timestamp"] < events["task-started"]["timestamp"]
        assert events["task-started"]["timestamp"] < succeeded["timestamp"]
    assert len(names) == SPEC.names


def test_each_sender_publishes_its_task_events_in_clock_and_time_order(built):
    """Heartbeats skip the buffer, so only task events are in publish order per sender."""
    last: dict[str, tuple[int, float]] = {}
    for event in events_of(built):
        if not event["type"].startswith("task-"):
            continue
        clock, ts = event["clock"], event["timestamp"]
        previous = last.get(event["hostname"])
        if previous is not None:
            assert clock > previous[0]
            assert ts >= previous[1]
        last[event["hostname"]] = (clock, ts)


def test_the_same_seed_builds_the_same_storm(built):
    again = storm.build_storm(SPEC, now=1_700_000_000.0)
    assert [m.body for m in again.messages] == [m.body for m in built.messages]


def test_sizes_below_one_are_refused():
    with pytest.raises(ValueError):
        storm.build_storm(storm.StormSpec(tasks=0))

"""The benchmark's storm publisher builds well-formed Celery events (no broker, no timing)."""

from __future__ import annotations

import argparse
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


def test_queues_send_every_name_to_every_queue():
    spec = storm.StormSpec(tasks=200, names=5, workers=3, queues=3, seed=2)
    built = storm.build_storm(spec, now=1_700_000_000.0)
    sent = [e for e in events_of(built) if e["type"] == "task-sent"]
    assert all(e["queue"] == e["routing_key"] for e in sent)
    names = {e["name"] for e in sent}
    assert {(e["name"], e["queue"]) for e in sent} == {
        (name, queue) for name in names for queue in ("celery", "default", "priority")
    }
    assert storm.queue_names(6) == ["celery", "default", "priority", "io", "q5", "q6"]


#: The event types each outcome sends, in the order they happen.
FATES = {
    "success": ("task-sent", "task-received", "task-started", "task-succeeded"),
    "failure": ("task-sent", "task-received", "task-started", "task-failed"),
    "retry": ("task-sent", "task-received", "task-started", "task-retried", "task-sent",
              "task-received", "task-started", "task-succeeded"),
    "retrying": ("task-sent", "task-received", "task-started", "task-retried"),
    "revoked": ("task-sent", "task-revoked"),
    "rejected": ("task-sent", "task-received", "task-rejected"),
    "started": ("task-sent", "task-received", "task-started"),
    "received": ("task-sent", "task-received"),
    "pending": ("task-sent",),
}  # fmt: skip


def test_outcomes_send_the_events_of_each_fate_in_order():
    names, queues = 3, 2
    spec = storm.StormSpec(
        tasks=names * queues * len(FATES) * 2,
        names=names,
        workers=4,
        queues=queues,
        outcomes=storm.ALL_OUTCOMES,
        heartbeat=0,
        seed=5,
    )
    built = storm.build_storm(spec, now=1_700_000_000.0)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for event in events_of(built):
        by_task[event["uuid"]].append(event)
    fates = Counter()
    for events in by_task.values():
        events.sort(key=lambda e: e["timestamp"])
        kinds = tuple(e["type"] for e in events)
        fate = next(f for f, expected in FATES.items() if kinds == expected)
        fates[fate] += 1
        for event in events:
            if event["type"] in ("task-failed", "task-retried"):
                last = event["traceback"].splitlines()[-1]
                assert event["exception"].split("(")[0] == last.split(":")[0]
        if fate == "retry":
            again = [e for e in events if e["type"] in ("task-sent", "task-received")][2:]
            assert [e["retries"] for e in again] == [1, 1] and again[0]["eta"]
    # The first names x queues x outcomes tasks go through every combination once.
    assert all(fates[fate] >= names * queues for fate in FATES)
    assert fates == built.outcomes
    assert built.spans == sum(n * storm.OUTCOMES[fate] for fate, n in fates.items())


def test_renamed_makes_the_same_events_for_other_tasks():
    spec = storm.StormSpec(tasks=100, names=4, workers=2, seed=3, id_prefix="c0ffee00")
    built = storm.build_storm(spec, now=1_700_000_000.0)
    before = events_of(built)
    assert all(e["uuid"].startswith("c0ffee00-") for e in before if "uuid" in e)
    after = []
    for message in built.messages:
        body = json.loads(storm.renamed(message, "c0ffee00", "00000001").body)
        after.extend(body if isinstance(body, list) else [body])
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        for key in ("uuid", "root_id", "parent_id"):
            if old.get(key):
                assert new[key] == "00000001" + old[key][8:]
        assert {k: v for k, v in new.items() if k not in ("uuid", "root_id", "parent_id")} == {
            k: v for k, v in old.items() if k not in ("uuid", "root_id", "parent_id")
        }


def test_outcome_mixes_parse():
    assert storm.parse_outcomes("all") == storm.ALL_OUTCOMES
    assert storm.parse_outcomes("success=3,failure") == (("success", 3.0), ("failure", 1.0))
    with pytest.raises(ValueError):
        storm.parse_outcomes("exploded")


def test_options_left_out_take_the_modes_spec():
    parser = argparse.ArgumentParser()
    storm.spec_arguments(parser, None)
    args = parser.parse_args(["--tasks", "10", "--outcomes", "pending"])
    base = storm.StormSpec(names=7, queues=2)
    spec = storm.spec_from(args, base)
    assert (spec.tasks, spec.names, spec.queues) == (10, 7, 2)
    assert spec.outcomes == (("pending", 1.0),)

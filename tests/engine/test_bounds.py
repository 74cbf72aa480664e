"""Memory stays bounded under a flood of new task ids and task names (issue #7).

One million unique task uuids under 100,000 unique task names go through the real
decode and engine path (``EventSource._on_message`` → orjson → ``Engine.ingest``) in a
subprocess of its own, so that its RSS is the stream's alone. With the default caps
(``--max-tasks 100000``, ``--max-task-names 1000``) the store keeps the newest 100,000
tasks, the names past the first thousand count under ``name="other"``, every eviction
is counted, and RSS stays under the bound documented in docs/production.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clearly_exporter.engine import Engine, EngineConfig
from clearly_exporter.engine.core import MAX_QUEUES
from clearly_exporter.metrics.collector import EngineCollector
from clearly_exporter.source import BrokerHealth, EventSource, SourceConfig

TASKS = 1_000_000
NAMES = 100_000
#: Events per list body, as Celery's dispatcher flushes them.
BATCH = 24
#: Peak RSS growth over the stream (docs/production.md, "Sizing"): the 100,000 stored
#: tasks at ~1 KB each (their names past the shared ones are their own copies), the
#: series of 1,001 names, and the decode buffers. Measured: ~102 MB.
BOUND_MB = 150
ROOT = Path(__file__).resolve().parents[2]


class Message(NamedTuple):
    """What ``EventSource._on_message`` reads of a kombu message."""

    content_type: str
    body: bytes


def bodies(tasks: int, names: int, t0: float = 1_700_000_000.0):
    """Each task's task-sent, task-received and task-succeeded, batched into JSON lists.

    Task-sent events name one of 300 queues: past the engine's cap on watched queues.
    """
    batch: list[dict] = []
    for i in range(tasks):
        uuid = f"{i >> 32:08x}-{i >> 16 & 0xFFFF:04x}-4{i & 0xFFF:03x}-8000-{i:012x}"
        ts = t0 + i * 1e-4
        fields = {
            "uuid": uuid,
            "name": f"app.tasks.job_{i % names}",
            "args": f"({i},)",
            "kwargs": "{}",
            "root_id": uuid,
            "parent_id": None,
            "retries": 0,
            "eta": None,
            "expires": None,
        }
        queue = f"q{i % 300}"
        batch.append(
            {
                "hostname": "gen1@client",
                **fields,
                "queue": queue,
                "exchange": "",
                "routing_key": queue,
                "timestamp": ts,
                "type": "task-sent",
            }
        )
        batch.append(
            {"hostname": "celery@w1", **fields, "timestamp": ts + 0.001, "type": "task-received"}
        )
        batch.append(
            {
                "hostname": "celery@w1",
                "uuid": uuid,
                "result": "None",
                "runtime": 0.01,
                "timestamp": ts + 0.01,
                "type": "task-succeeded",
            }
        )
        if len(batch) >= BATCH:
            yield orjson.dumps(batch)
            batch = []
    if batch:
        yield orjson.dumps(batch)


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def stream(tasks: int, names: int) -> dict:
    """Run the stream through a source and engine with the default caps; what it left."""
    engine = Engine(EngineConfig())
    source = EventSource(SourceConfig("memory://", {}), engine, clock=lambda: 1_700_000_000.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, BrokerHealth(), None))
    start = rss_mb("VmRSS")
    for body in bodies(tasks, names):
        source._on_message(Message("application/json", body))
    peak = rss_mb("VmHWM")  # before the scrape below, which renders thousands of series
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    succeeded: dict[str, float] = {}
    for s in families["celery_tasks"].samples:
        if s.name == "celery_tasks_total" and s.labels["state"] == "SUCCESS":
            succeeded[s.labels["name"]] = succeeded.get(s.labels["name"], 0.0) + s.value
    return {
        "rss_start_mb": start,
        "rss_peak_mb": peak,
        "stored": engine.tasks_stored,
        "evicted": families["clearly_exporter_tasks_evicted"].samples[0].value,
        "succeeded": succeeded,
        "invalid": engine.events_invalid,
        "queues": len(engine.snapshot(1_700_000_000.0).queues),
    }


def test_a_million_tasks_and_100k_names_stay_bounded():
    run = subprocess.run(
        [sys.executable, "-m", "tests.engine.test_bounds", str(TASKS), str(NAMES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    out = json.loads(run.stdout)
    max_tasks = EngineConfig().max_tasks
    assert out["invalid"] == 0
    assert out["queues"] == MAX_QUEUES
    assert out["stored"] == max_tasks
    assert out["evicted"] == TASKS - max_tasks
    succeeded = out["succeeded"]
    assert len(succeeded) == EngineConfig().max_task_names + 1
    assert sum(succeeded.values()) == TASKS
    # Names past the cap fold into "other": 99,000 of the 100,000 names, 10 tasks each.
    assert succeeded["other"] == TASKS - EngineConfig().max_task_names * TASKS // NAMES
    grown = out["rss_peak_mb"] - out["rss_start_mb"]
    assert grown < BOUND_MB, out


if __name__ == "__main__":
    print(json.dumps(stream(int(sys.argv[1]), int(sys.argv[2]))))

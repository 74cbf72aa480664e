"""A live cluster for the API and client tests: Redis, a real worker, the exporter, tasks.

One cluster per test module: starting a worker takes seconds, and the tests only read
what a known workload left behind. The workload covers every kind of task the issue
names: successes, failures with tracebacks, a retry, a secret kwarg, subtasks, a task
whose args and result Celery cut (completed from the result backend), and a task still
running.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.events.event import get_exchange
from kombu import Connection, Producer

from clearly_exporter.brokers import connection_config, transport_for
from tests.support import (
    Exporter,
    Worker,
    http_get,
    producer,
    reachable,
    wait_for,
    wait_worker_up,
)

#: Redis databases of these tests alone, apart from the suite's 9 and the bundle's, so
#: no other test's workers or flushes reach them: one for the module clusters, one for
#: tests with an exporter of their own (both run one at a time).
CLUSTER_DB = 14
SOLO_DB = 15
#: The task names the workload sends (spawn's children are demo.add), sorted.
TASK_NAMES = [
    "demo.add",
    "demo.big",
    "demo.fail",
    "demo.flaky",
    "demo.login",
    "demo.slow",
    "demo.spawn",
]
#: demo.big's argument: its repr and its result's are past the 1024 characters Celery keeps.
BIG_ARG = "".join(f"{i:04d}" for i in range(500))


def private_redis(db: int = SOLO_DB) -> str:
    """A flushed Redis database (Redis events do not cross databases); skipped when Redis
    is unreachable, unless ``CI=true``, as the suite's other broker tests."""
    if not reachable("127.0.0.1", 6379):
        message = "redis broker not reachable on 127.0.0.1:6379"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (mandatory when CI=true)")
        pytest.skip(message)
    url = f"redis://127.0.0.1:6379/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def publish(broker: str, bodies: list[object]) -> None:
    """Publish raw event bodies (one event, or a batch as a list) on the event exchange."""
    url, options = connection_config(broker)
    with Connection(url, transport=transport_for(url), transport_options=options) as conn:
        producer = Producer(conn.channel(), exchange=get_exchange(conn))
        for body in bodies:
            producer.publish(body, routing_key="task.multi", serializer="json")


def api_get(base: str, path: str) -> tuple[int, Any]:
    status, body, _ = http_get(base + path)
    return status, json.loads(body) if body else None


@dataclass
class Cluster:
    broker: str
    tmp: Path
    queue: str
    exporter: Exporter
    worker: Worker
    app: Celery
    #: Task ids of the workload, by role.
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.exporter.url

    def send(self, name: str, *args: Any, **kwargs: Any) -> str:
        task_id = str(uuid.uuid4())
        self.app.send_task(name, args, kwargs, queue=self.queue, task_id=task_id)
        return task_id

    def state(self, task_id: str, exporter: Exporter | None = None) -> str | None:
        status, task = api_get((exporter or self.exporter).url, f"/api/tasks/{task_id}")
        return task["state"] if status == 200 else None

    def wait_state(self, task_id: str, state: str, exporter: Exporter | None = None) -> None:
        wait_for(lambda: self.state(task_id, exporter) == state, 60, f"task {task_id} in {state}")


def run_workload(cluster: Cluster) -> None:
    """Known tasks, the first three one after another so their order is known."""
    ids = cluster.ids
    for i in range(1, 4):
        ids[f"add{i}"] = cluster.send("demo.add", 100, i)
        cluster.wait_state(ids[f"add{i}"], "SUCCESS")
    ids["fail1"] = cluster.send("demo.fail", "boom 1")
    ids["fail2"] = cluster.send("demo.fail", "boom 2")
    ids["flaky"] = cluster.send("demo.flaky", "k", failures=1)
    ids["login"] = cluster.send("demo.login", "ann", password="hunter2")
    ids["spawn"] = cluster.send("demo.spawn", 2)
    ids["slow"] = cluster.send("demo.slow", 120)
    ids["big"] = cluster.send("demo.big", BIG_ARG)
    # A secret past the 1024 characters the events keep: only the backend's copy has it.
    ids["big_secret"] = cluster.send("demo.add", [BIG_ARG], [{"token": "hunter3"}])
    for role in ("fail1", "fail2"):
        cluster.wait_state(ids[role], "FAILURE")
    for role in ("flaky", "login", "spawn", "big", "big_secret"):
        cluster.wait_state(ids[role], "SUCCESS")
    cluster.wait_state(ids["slow"], "STARTED")

    def children() -> list[str]:
        _, task = api_get(cluster.url, f"/api/tasks/{ids['spawn']}")
        return task["children"] if len(task["children"]) == 2 else []

    for i, child in enumerate(sorted(wait_for(children, 60, "the spawned subtasks"))):
        ids[f"child{i}"] = child
        cluster.wait_state(child, "SUCCESS")


@contextmanager
def running_cluster(tmp: Path) -> Iterator[Cluster]:
    """Redis (skipped when unreachable, unless CI), a worker, the exporter, the workload."""
    broker = private_redis(CLUSTER_DB)
    queue = f"q-{uuid.uuid4().hex[:10]}"
    # Results in the broker's database: the exporter completes cut values from there.
    exporter = Exporter(broker, tmp, ["--queue", queue, "--backend", broker])
    worker = Worker(broker, queue, tmp, backend=broker)
    cluster = Cluster(broker, tmp, queue, exporter, worker, producer(broker))
    try:
        exporter.start()
        worker.start()
        wait_worker_up(exporter, worker)
        run_workload(cluster)
        yield cluster
    finally:
        if worker.proc is not None:
            worker.kill()  # demo.slow is still running: no warm shutdown to wait for
        exporter.stop()

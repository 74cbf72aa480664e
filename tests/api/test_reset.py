"""Reset against a running exporter fed by a real worker: finished tasks go, the rest stays."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from tests.cluster import api_get, private_redis
from tests.support import Exporter, Worker, producer, select, wait_for, wait_worker_up


def post(url: str) -> dict:
    request = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def state(exporter: Exporter, task_id: str) -> str | None:
    status, task = api_get(exporter.url, f"/api/tasks/{task_id}")
    return task["state"] if status == 200 else None


def test_reset_forgets_finished_tasks_keeps_in_flight_ones_and_counters(tmp_path: Path, cleanup):
    broker = private_redis()
    queue = f"q-{uuid.uuid4().hex[:10]}"
    exporter = Exporter(broker, tmp_path)
    cleanup.append(exporter.start())
    worker = Worker(broker, queue, tmp_path)
    cleanup.append(worker.start())
    wait_worker_up(exporter, worker)
    app = producer(broker)
    done = app.send_task("demo.add", (1, 1), queue=queue).id
    failed = app.send_task("demo.fail", ("x",), queue=queue).id
    running = app.send_task("demo.slow", (120,), queue=queue).id
    wait_for(lambda: state(exporter, done) == "SUCCESS", 60, "the add done")
    wait_for(lambda: state(exporter, failed) == "FAILURE", 60, "the failure done")
    wait_for(lambda: state(exporter, running) == "STARTED", 60, "the slow task running")

    def counted() -> dict:
        return select(exporter.scrape(), "celery_tasks_total", queue=queue, state="SUCCESS")

    before = counted()
    assert post(exporter.url + "/api/reset") == {"forgotten": 2, "kept": 1}
    assert [t["uuid"] for t in api_get(exporter.url, "/api/tasks")[1]["tasks"]] == [running]
    assert api_get(exporter.url, f"/api/tasks/{done}")[0] == 404
    assert counted() == before == {(("name", "demo.add"),): 1.0}
    _, stats = api_get(exporter.url, "/api/stats")
    assert stats["tasks_stored"] == 1 and stats["tasks_processed"] == 2
    assert post(exporter.url + "/api/reset") == {"forgotten": 0, "kept": 1}
    worker.kill()

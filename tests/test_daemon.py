"""End to end: real workers on each broker, the exporter as a child process, /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from clearly_exporter.cli import main
from tests.support import (
    Exporter,
    Samples,
    Worker,
    http_get,
    producer,
    select,
    wait_for,
    wait_worker_up,
)


def task_counts(samples: Samples, queue: str) -> dict[tuple[str, str], float]:
    return {
        (dict(k)["name"], dict(k)["state"]): v
        for k, v in select(samples, "celery_tasks_total", queue=queue).items()
    }


def hist_counts(samples: Samples, metric: str, queue: str) -> dict[tuple, float]:
    return {k: v for k, v in select(samples, metric + "_count", queue=queue).items() if v}


EXPECTED = {
    ("demo.add", "PENDING"): 10,
    ("demo.add", "RECEIVED"): 10,
    ("demo.add", "STARTED"): 10,
    ("demo.add", "SUCCESS"): 10,
    ("demo.fail", "PENDING"): 3,
    ("demo.fail", "RECEIVED"): 3,
    ("demo.fail", "STARTED"): 3,
    ("demo.fail", "FAILURE"): 3,
    ("demo.flaky", "PENDING"): 6,
    ("demo.flaky", "RECEIVED"): 6,
    ("demo.flaky", "STARTED"): 6,
    ("demo.flaky", "RETRY"): 4,
    ("demo.flaky", "SUCCESS"): 2,
    ("demo.wait_then", "PENDING"): 1,
    ("demo.wait_then", "RECEIVED"): 1,
    ("demo.wait_then", "REVOKED"): 1,
}


def test_known_workload_gives_exact_counts(broker: str, queue: str, tmp_path: Path, cleanup):
    exporter = Exporter(broker, tmp_path, ["--queue", queue])
    cleanup.append(exporter.start())
    worker = Worker(broker, queue, tmp_path)
    cleanup.append(worker.start())
    wait_worker_up(exporter, worker)
    app = producer(broker)
    for i in range(10):
        app.send_task("demo.add", (i, i), queue=queue)
    for i in range(3):
        app.send_task("demo.fail", (f"boom {i}",), queue=queue)
    for i in range(2):
        app.send_task("demo.flaky", (f"k{i}",), {"failures": 2}, queue=queue)
    doomed = app.send_task("demo.wait_then", (0,), queue=queue, countdown=2)
    wait_for(
        lambda: task_counts(exporter.scrape(), queue).get(("demo.wait_then", "RECEIVED")),
        60,
        "the doomed task received",
    )
    app.control.revoke(doomed.id)

    def settled() -> Samples | None:
        samples = exporter.scrape()
        return samples if task_counts(samples, queue) == EXPECTED else None

    try:
        samples = wait_for(settled, 90, "exact task counts")
    finally:  # on failure: every label, so a task counted under another queue shows
        last = exporter.scrape()
        print(select(last, "celery_tasks_total"))
        print({k: v for k, v in last.items() if k[0].startswith("clearly_exporter_events")})
        print(exporter.proc.output()[-2000:])
    assert hist_counts(samples, "celery_task_runtime_seconds", queue) == {
        (("name", "demo.add"), ("state", "SUCCESS")): 10,
        (("name", "demo.fail"), ("state", "FAILURE")): 3,
        (("name", "demo.flaky"), ("state", "RETRY")): 4,
        (("name", "demo.flaky"), ("state", "SUCCESS")): 2,
    }
    waits = {(("name", "demo.add"),): 10, (("name", "demo.fail"),): 3, (("name", "demo.flaky"),): 2}
    assert hist_counts(samples, "celery_task_queue_wait_seconds", queue) == waits
    assert hist_counts(samples, "celery_task_prefetch_wait_seconds", queue) == waits
    in_progress = select(samples, "celery_tasks_in_progress", queue=queue)
    assert in_progress and set(in_progress.values()) == {0.0}
    failures = select(samples, "celery_task_failures_total", queue=queue)
    assert failures == {(("exception", "ValueError"), ("name", "demo.fail")): 3}
    assert select(samples, "clearly_exporter_events_invalid_total") == {(): 0.0}
    assert select(samples, "clearly_exporter_events_lost_total") == {(): 0.0}, "no false loss"
    assert select(samples, "clearly_exporter_broker_up") == {(): 1.0}
    assert select(samples, "celery_queue_length", queue=queue) == {(): 0.0}


def test_killed_worker_reads_down_within_the_timeout(
    broker: str, queue: str, tmp_path: Path, cleanup
):
    exporter = Exporter(broker, tmp_path, ["--worker-timeout", "3s"])
    cleanup.append(exporter.start())
    worker = Worker(broker, queue, tmp_path)
    cleanup.append(worker.start())

    def up() -> dict:
        return select(exporter.scrape(), "celery_worker_up", worker=worker.name)

    wait_for(lambda: up() == {(): 1.0}, 60, "worker up")
    killed_at = time.monotonic()
    worker.kill()
    wait_for(lambda: up() == {(): 0.0}, 15, "worker down")
    # Last heartbeat is at most one interval (2 s) before the kill, so down ≤ 3 s later.
    assert time.monotonic() - killed_at < 3 + 1.5
    assert up() == {(): 0.0}, "a dead worker keeps reading 0 until purged"


def test_healthz_and_index(broker: str, tmp_path: Path, cleanup):
    exporter = Exporter(broker, tmp_path)
    cleanup.append(exporter.start())
    assert http_get(exporter.url + "/healthz")[:2] == (200, "ok\n")
    status, body, _headers = http_get(exporter.url + "/")
    assert status == 200 and 'href="metrics"' in body and 'href="healthz"' in body
    samples = exporter.scrape()
    assert select(samples, "clearly_exporter_build_info")


@pytest.mark.parametrize("broker", ["filesystem"], indirect=True)
def test_unreachable_broker_is_retried_and_reported(tmp_path: Path, cleanup, broker):
    exporter = Exporter("redis://127.0.0.1:1/0", tmp_path)
    cleanup.append(exporter.start(wait_healthy=False))
    status, body, _ = http_get(exporter.url + "/healthz")
    assert status == 503 and body.startswith("broker not connected:")
    assert "\n" not in body.strip()
    samples = exporter.scrape()
    assert select(samples, "clearly_exporter_broker_up") == {(): 0.0}
    assert exporter.proc.popen.poll() is None
    stats = CliRunner().invoke(main, ["stats", "--url", exporter.url])
    assert stats.exit_code == 0
    assert stats.output.startswith("Problem           broker not connected: "), stats.output

"""Broker outages while real workers run: the exporter survives, reports and resumes.

Each test runs a broker of its own (tests/servers.py) and stops and restarts it: the
machine's shared Redis and RabbitMQ are never touched (stopping the shared RabbitMQ
once left Celery workers unable to consume for minutes after it came back).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery import Celery

from tests.servers import PrivateRabbit, PrivateRedis
from tests.support import (
    Exporter,
    Worker,
    http_get,
    producer,
    select,
    wait_for,
    wait_worker_up,
)


def straddle_outage(broker: str, queue: str, tmp: Path, cleanup, outage, restore) -> None:
    """Tasks started before the outage end during it; counting must resume, never double.

    Whether their ends are seen depends on the worker: events it sends while the broker
    is down may be lost, so only "at most once" is asserted for them.
    """
    exporter = Exporter(broker, tmp)
    cleanup.append(exporter.start())
    worker = Worker(broker, queue, tmp)
    cleanup.append(worker.start())
    wait_worker_up(exporter, worker)
    app = Celery("test-producer", set_as_current=False)
    app.conf.update(broker_url=broker, task_send_sent_event=True)
    for _ in range(3):
        app.send_task("demo.slow", (4,), queue=queue)

    def counted(name: str, state: str, where: str = queue) -> float:
        counts = select(exporter.scrape(), "celery_tasks_total", queue=where, state=state)
        return counts.get((("name", name),), 0)

    wait_for(lambda: counted("demo.slow", "STARTED") == 3, 60, "three tasks started")
    outage()
    wait_for(
        lambda: select(exporter.scrape(), "clearly_exporter_broker_up") == {(): 0.0},
        30,
        "broker_up 0 during the outage",
    )
    status, reason, _ = http_get(exporter.url + "/healthz")
    assert status == 503 and reason.startswith("broker not connected")
    restore()
    wait_for(lambda: http_get(exporter.url + "/healthz")[0] == 200, 90, "healthy after the outage")
    samples = exporter.scrape()
    assert select(samples, "clearly_exporter_broker_up") == {(): 1.0}
    assert select(samples, "clearly_exporter_broker_reconnects_total")[()] >= 1
    # A worker or producer that lived through the outage may take long to work again
    # (Celery's own reconnection: seen receiving a task after a RabbitMQ restart and
    # never starting it): fresh ones, on a queue of their own, show that the exporter
    # counts again, which is what is tested here.
    fresh = f"{queue}-after"
    cleanup.append(Worker(broker, fresh, tmp).start())
    after = Celery("test-producer-after", set_as_current=False)
    after.conf.update(broker_url=broker, task_send_sent_event=True)
    for i in range(3):
        after.send_task("demo.add", (i, i), queue=fresh)
    wait_for(lambda: counted("demo.add", "SUCCESS", fresh) == 3, 90, "counting resumed")
    for state in ("PENDING", "RECEIVED", "STARTED"):
        assert counted("demo.slow", state) == 3, state
    assert counted("demo.slow", "SUCCESS") <= 3, "never counted twice"
    assert exporter.proc.popen.poll() is None


def test_redis_restart_mid_stream(queue: str, tmp_path: Path, cleanup):
    redis = PrivateRedis(tmp_path).start()
    cleanup.append(redis)
    straddle_outage(redis.url(), queue, tmp_path, cleanup, redis.stop, redis.start)


def test_rabbitmq_restart_mid_stream(queue: str, tmp_path: Path, cleanup):
    rabbit = PrivateRabbit(tmp_path).start()
    cleanup.append(rabbit)
    straddle_outage(rabbit.url, queue, tmp_path, cleanup, rabbit.stop, rabbit.start)


def test_redis_cuts_off_a_stalled_exporter(queue: str, tmp_path: Path, cleanup):
    """Redis drops a subscriber whose output buffer passes the pubsub limit; the events
    in that buffer are gone. The exporter must come back and say events were lost."""
    redis = PrivateRedis(tmp_path, ["--client-output-buffer-limit", "pubsub 64kb 32kb 1"])
    cleanup.append(redis.start())
    exporter = Exporter(redis.url(), tmp_path)
    cleanup.append(exporter.start())
    worker = Worker(redis.url(), queue, tmp_path)
    cleanup.append(worker.start())
    wait_worker_up(exporter, worker)
    app = producer(redis.url())
    payload = "x" * 1000  # events carry args and results: ~4 KB of events per task
    sent = 0

    def counted(name: str, state: str) -> float:
        counts = select(exporter.scrape(), "celery_tasks_total", queue=queue, state=state)
        return counts.get((("name", name),), 0)

    def cut_off() -> bool:
        nonlocal sent
        for _ in range(100):
            app.send_task("demo.add", (payload, "y"), queue=queue)
        sent += 100
        return "output buffer limits" in redis.proc.output()

    before = exporter.scrape()
    assert select(before, "clearly_exporter_events_lost_total") == {(): 0.0}
    assert select(before, "clearly_exporter_broker_reconnects_total") == {(): 0.0}
    pid = exporter.proc.popen.pid
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        wait_for(cut_off, 40, "redis to cut the stalled exporter off", every=0)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"cut off after {sent} tasks, {time.monotonic() - t0:.1f}s stalled")
    wait_for(
        lambda: select(exporter.scrape(), "clearly_exporter_broker_reconnects_total")[()] >= 1,
        30,
        "reconnected",
    )
    wait_for(lambda: exporter.get("/healthz")[0] == 200, 30, "healthy again")
    assert select(exporter.scrape(), "clearly_exporter_broker_up") == {(): 1.0}
    for i in range(5):
        app.send_task("demo.login", (f"u{i}",), queue=queue)
    wait_for(lambda: counted("demo.login", "SUCCESS") == 5, 60, "counting resumed")
    lost = wait_for(
        lambda: select(exporter.scrape(), "clearly_exporter_events_lost_total")[()],
        30,
        "the gap reported as lost events",
    )
    print(f"events lost reported: {lost}")
    assert lost <= sent, "at most one task-started per task sent"
    assert "reconnected after" in exporter.proc.output(), "the gap is logged"
    for state in ("PENDING", "RECEIVED", "STARTED", "SUCCESS"):
        assert counted("demo.add", state) <= sent, "never counted twice"
    assert exporter.proc.popen.poll() is None

"""Broker outages while real workers run: the exporter survives, reports and resumes.

Redis runs as a private server the test stops and starts. A RabbitMQ restart is not
tested here: stopping the machine's shared RabbitMQ left Celery workers unable to
consume for minutes after it came back, which made the test about Celery, not us.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from celery import Celery

from tests.support import (
    Exporter,
    Proc,
    Worker,
    child_env,
    free_port,
    http_get,
    reachable,
    select,
    wait_for,
    wait_worker_up,
)


class PrivateRedis:
    """A redis-server of the test's own, on a fixed port across restarts."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        self.proc = Proc(cmd, child_env(), self.tmp / f"redis-{self.port}.log").start()
        wait_for(lambda: reachable("127.0.0.1", self.port), 20, "private redis up")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


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

    def counted(name: str, state: str) -> float:
        counts = select(exporter.scrape(), "celery_tasks_total", queue=queue, state=state)
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
    # (Celery's own reconnection, seen stuck after a RabbitMQ restart): fresh ones show
    # that the exporter counts again, which is what is tested here.
    cleanup.append(Worker(broker, queue, tmp).start())
    after = Celery("test-producer-after", set_as_current=False)
    after.conf.update(broker_url=broker, task_send_sent_event=True)
    for i in range(3):
        after.send_task("demo.add", (i, i), queue=queue)
    wait_for(lambda: counted("demo.add", "SUCCESS") == 3, 90, "counting resumed")
    for state in ("PENDING", "RECEIVED", "STARTED"):
        assert counted("demo.slow", state) == 3, state
    assert counted("demo.slow", "SUCCESS") <= 3, "never counted twice"
    assert exporter.proc.popen.poll() is None


def test_redis_restart_mid_stream(queue: str, tmp_path: Path, cleanup):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    redis = PrivateRedis(tmp_path).start()
    cleanup.append(redis)
    straddle_outage(redis.url, queue, tmp_path, cleanup, redis.stop, redis.start)

"""Broker outages while real workers run: the exporter survives, reports and resumes.

Redis runs as a private server the test stops and starts; RabbitMQ is the machine's,
whose application the test stops and starts with rabbitmqctl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from celery import Celery

from tests.support import (
    AMQP_URL,
    Exporter,
    Proc,
    Worker,
    child_env,
    free_port,
    http_get,
    reachable,
    select,
    wait_for,
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


class RabbitApp:
    """The machine's RabbitMQ application, stopped and started with rabbitmqctl."""

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)

    def start(self) -> RabbitApp:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        wait_for(lambda: reachable("127.0.0.1", 5672), 60, "rabbitmq accepting connections")
        return self


def straddle_outage(broker: str, queue: str, tmp: Path, cleanup, outage, restore) -> None:
    """Tasks received before the outage finish during it; each must count exactly once."""
    exporter = Exporter(broker, tmp)
    cleanup.append(exporter.start())
    worker = Worker(broker, queue, tmp)
    cleanup.append(worker.start())
    wait_for(
        lambda: select(exporter.scrape(), "celery_worker_up", worker=worker.name) == {(): 1.0},
        60,
        "worker up",
    )
    app = Celery("test-producer", set_as_current=False)
    app.conf.update(broker_url=broker, task_send_sent_event=True)
    for _ in range(3):
        app.send_task("demo.slow", (4,), queue=queue)

    def counted(state: str) -> float:
        counts = select(exporter.scrape(), "celery_tasks_total", queue=queue, state=state)
        return counts.get((("name", "demo.slow"),), 0)

    wait_for(lambda: counted("STARTED") == 3, 60, "three tasks started")
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
    wait_for(lambda: counted("SUCCESS") == 3, 90, "the three tasks succeeded")
    for state in ("PENDING", "RECEIVED", "STARTED"):
        assert counted(state) == 3, state
    assert exporter.proc.popen.poll() is None


def test_redis_restart_mid_stream(queue: str, tmp_path: Path, cleanup):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    redis = PrivateRedis(tmp_path).start()
    cleanup.append(redis)
    straddle_outage(redis.url, queue, tmp_path, cleanup, redis.stop, redis.start)


def test_rabbitmq_restart_mid_stream(queue: str, tmp_path: Path, cleanup):
    mandatory = os.environ.get("CI") == "true"
    if shutil.which("rabbitmqctl") is None or not reachable("127.0.0.1", 5672):
        if mandatory:
            pytest.fail("RabbitMQ and rabbitmqctl are mandatory when CI=true")
        pytest.skip("RabbitMQ or rabbitmqctl not available")
    rabbit = RabbitApp()
    try:
        straddle_outage(AMQP_URL, queue, tmp_path, cleanup, rabbit.stop, rabbit.start)
    finally:
        if not reachable("127.0.0.1", 5672):
            rabbit.start()

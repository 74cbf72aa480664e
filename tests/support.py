"""Real parts for integration tests: brokers, exporter and worker processes, scrapes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

REDIS_URL = "redis://127.0.0.1:6379/9"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
        last = condition()
    return last


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
    except OSError:
        return 0, "", {}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample as ``{(name, sorted labels): value}``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def select(samples: Samples, metric: str, **labels: str) -> dict[tuple, float]:
    """Samples of ``metric`` whose labels include ``labels``, keyed by their other labels."""
    out = {}
    for (sname, slabels), value in samples.items():
        d = dict(slabels)
        if sname == metric and all(d.get(k) == v for k, v in labels.items()):
            out[tuple(sorted((k, v) for k, v in d.items() if k not in labels))] = value
    return out


@dataclass
class Proc:
    """A child process whose output goes to a log file, stopped for sure at the end."""

    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        handle = self.log.open("wb")
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        os.killpg(self.popen.pid, sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLEARLY_EXPORTER_BROKER", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Exporter:
    """``clearly-exporter run`` as a real child process on a free port."""

    broker: str
    tmp: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_healthy: bool = True) -> Exporter:
        cmd = [sys.executable, "-m", "clearly_exporter", "run", "--broker", self.broker]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *self.args]
        log = self.tmp / f"exporter-{self.port}.log"
        self.proc = Proc(cmd, child_env(), log).start()
        wait_for(lambda: http_get(self.url + "/healthz")[0] in (200, 503), 30, "exporter up")
        if wait_healthy:
            wait_for(lambda: http_get(self.url + "/healthz")[0] == 200, 30, "exporter healthy")
        return self

    def scrape(self) -> Samples:
        status, body, _ = http_get(self.url + "/metrics")
        assert status == 200, body
        return parse_metrics(body)

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc else None


@dataclass
class Worker:
    """A real ``celery worker -E`` running the demo app, on one queue."""

    broker: str
    queue: str
    tmp: Path
    name: str = field(default_factory=lambda: f"w{uuid.uuid4().hex[:8]}@test")
    backend: str = ""
    proc: Proc | None = None

    def start(self) -> Worker:
        cmd = [sys.executable, "-m", "celery", "-A", "clearly_exporter.demo.app", "worker"]
        cmd += ["-E", "-n", self.name, "-Q", self.queue, "--pool", "threads", "-c", "4"]
        cmd += ["-l", "warning", "--without-mingle", "--without-gossip"]
        env = child_env(CLEARLY_DEMO_BROKER=self.broker, CLEARLY_DEMO_BACKEND=self.backend)
        self.proc = Proc(cmd, env, self.tmp / f"{self.name}.log").start()
        return self

    def kill(self) -> None:
        assert self.proc is not None and self.proc.popen is not None
        self.proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

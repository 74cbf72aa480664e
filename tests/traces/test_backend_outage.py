"""A result backend that is down or hung never slows event consumption nor loses spans.

Results over 1024 characters are cut in Celery's events, so the exporter fetches them
from ``--backend``; here that backend is a Redis of the test's own, never started (down)
or SIGSTOPped (hung: the kernel accepts connections, nothing answers). Workers store no
results: the test is about the exporter's fetches, not Celery's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster import api_get
from tests.otlp_receiver import GrpcReceiver, Span
from tests.servers import PrivateRedis
from tests.support import (
    REDIS_URL,
    Exporter,
    Worker,
    producer,
    select,
    wait_for,
    wait_worker_up,
)

#: Enough tasks that fetching them one after another (5 s timeout each, four at a time)
#: would take far longer than the deadlines below.
N = 20
#: From the last task counted to its span exported: the 1 s grace, one 5 s fetch
#: timeout, the shipper's 1 s batching, and slack for a loaded machine.
SPAN_DEADLINE = 15


@pytest.fixture
def redis_broker(broker: str) -> str:
    if broker != REDIS_URL:
        pytest.skip("the workload runs on Redis")
    return broker


class Cluster:
    """An exporter tracing to a real OTLP receiver, one worker, a producer."""

    def __init__(self, broker: str, backend: str, queue: str, tmp: Path, cleanup) -> None:
        self.receiver = GrpcReceiver().start()
        cleanup.append(self.receiver)
        args = ["--otlp-endpoint", self.receiver.endpoint, "--backend", backend]
        self.exporter = Exporter(broker, tmp, args)
        cleanup.append(self.exporter.start())
        self.worker = Worker(broker, queue, tmp)
        cleanup.append(self.worker.start())
        wait_worker_up(self.exporter, self.worker)
        self.app = producer(broker)
        self.queue = queue

    def send_big(self, n: int) -> set[str]:
        """``n`` tasks whose 5000-character result the events cut; their ids."""
        return {
            self.app.send_task("demo.big", ("p" * 2000,), queue=self.queue).id for _ in range(n)
        }

    def succeeded(self) -> float:
        counts = select(
            self.exporter.scrape(), "celery_tasks_total", queue=self.queue, state="SUCCESS"
        )
        return counts.get((("name", "demo.big"),), 0)

    def spans(self, ids: set[str]) -> dict[str, Span]:
        return {
            s.attributes["celery.task.id"]: s
            for s in self.receiver.snapshot()
            if s.attributes["celery.task.id"] in ids
        }

    def fetches(self, total: int = 0) -> dict[str, float]:
        """Fetch outcomes, once at least ``total`` are counted (the span process reports
        its counts right after sending, so they may trail the spans by a moment)."""

        def counted() -> dict[str, float] | None:
            samples = select(self.exporter.scrape(), "clearly_exporter_result_fetches_total")
            out = {dict(labels)["outcome"]: value for labels, value in samples.items()}
            return out if sum(out.values()) >= total else None

        return wait_for(counted, 10, f"{total} fetch outcomes counted")


def counted_then_exported(cluster: Cluster, ids: set[str]) -> dict[str, Span]:
    """Every task counted as fast as without a backend, then every span exported, cut."""
    started = time.monotonic()
    wait_for(lambda: cluster.succeeded() == len(ids), 20, "every task counted")
    counted = time.monotonic()
    spans = wait_for(
        lambda: (s := cluster.spans(ids)) and len(s) == len(ids) and s,
        SPAN_DEADLINE,
        "every span exported",
        every=0.2,
    )
    print(f"counted in {counted - started:.1f}s, spans {time.monotonic() - counted:.1f}s later")
    for span in spans.values():
        assert span.attributes["celery.task.result.source"] == "truncated"
        assert len(span.attributes["celery.task.result"]) < 1100, "the event's cut value"
    return spans


def failed_fetches(cluster: Cluster, outcome: str, when: str = "") -> None:
    """Every span's fetch ended once, none completed, ``outcome`` among them."""
    fetches = cluster.fetches(N)
    print(f"fetch outcomes{when}: {fetches}")
    assert fetches[outcome] >= 1 and fetches["ok"] == 0
    assert sum(fetches.values()) == N, "one outcome per span"


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_backend_down(redis_broker: str, queue: str, tmp_path: Path, cleanup):
    backend = PrivateRedis(tmp_path)  # never started: connections are refused
    cluster = Cluster(redis_broker, backend.url(), queue, tmp_path, cleanup)
    counted_then_exported(cluster, cluster.send_big(N))
    failed_fetches(cluster, "error")
    assert cluster.exporter.proc.popen.poll() is None


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_backend_hung_then_back(redis_broker: str, queue: str, tmp_path: Path, cleanup):
    backend = PrivateRedis(tmp_path).start()
    cleanup.append(backend)
    backend.pause()
    cluster = Cluster(redis_broker, backend.url(), queue, tmp_path, cleanup)
    ids = cluster.send_big(N)
    counted_then_exported(cluster, ids)
    failed_fetches(cluster, "timeout", " while hung")
    asked = time.monotonic()
    status, view = api_get(cluster.exporter.url, f"/api/tasks/{min(ids)}")
    waited = time.monotonic() - asked
    print(f"task view answered in {waited:.1f}s while hung")
    assert status == 200 and view["values_source"] == "truncated"
    assert waited < 8, "within the 5 s deadline, not the client's own timeout"

    # Back: a worker that stores its results there; fetches complete values again.
    backend.resume()
    cluster.worker.stop()
    cleanup.append(Worker(redis_broker, queue, tmp_path, backend=backend.url()).start())

    def completed() -> bool:
        ids = cluster.send_big(1)
        span = wait_for(lambda: cluster.spans(ids), SPAN_DEADLINE, "the span")
        return next(iter(span.values())).attributes["celery.task.result.source"] == "backend"

    wait_for(completed, 45, "a complete value fetched once the backend is back", every=0)
    wait_for(lambda: cluster.fetches()["ok"] >= 1, 10, "the complete fetch counted")
    (stored,) = cluster.send_big(1)

    def view_completed() -> bool:  # once the task ran and its result is stored
        _, view = api_get(cluster.exporter.url, f"/api/tasks/{stored}")
        return view is not None and view.get("values_source") == "backend"

    wait_for(view_completed, 45, "the task view completed once the backend is back")


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_sigterm_while_fetches_hang(redis_broker: str, queue: str, tmp_path: Path, cleanup):
    """Spans waiting on a hung backend are exported, cut, at SIGTERM: never dropped."""
    backend = PrivateRedis(tmp_path).start()
    cleanup.append(backend)
    backend.pause()
    cluster = Cluster(redis_broker, backend.url(), queue, tmp_path, cleanup)
    ids = cluster.send_big(N)
    wait_for(lambda: cluster.succeeded() == N, 20, "every task counted")
    stopping = time.monotonic()
    assert cluster.exporter.stop() == 0
    print(f"stopped in {time.monotonic() - stopping:.1f}s")
    assert time.monotonic() - stopping < 10
    spans = cluster.spans(ids)
    assert len(spans) == N, f"{N - len(spans)} spans lost at SIGTERM"
    assert {s.attributes["celery.task.result.source"] for s in spans.values()} == {"truncated"}

"""Spans of real workers' tasks, received by a real OTLP receiver over gRPC and HTTP."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from celery import chain

from tests.cluster import publish
from tests.engine.events import received, sent, started, succeeded
from tests.otlp_receiver import GrpcReceiver, HttpReceiver, Span
from tests.support import (
    REDIS_URL,
    Exporter,
    Samples,
    Worker,
    http_get,
    producer,
    select,
    wait_for,
    wait_worker_up,
)

BACKEND = "redis://127.0.0.1:6379/10"
SECRET = "s3cr3t-planted-value"


@pytest.fixture
def redis_broker(broker: str) -> str:
    if broker != REDIS_URL:
        pytest.skip("the trace workload runs on Redis, with a Redis result backend")
    redis.Redis.from_url(BACKEND).flushdb()
    return broker


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.parametrize("receiver_kind", ["grpc", "http/protobuf"])
def test_workflows_become_trace_trees(
    redis_broker: str, receiver_kind: str, queue: str, tmp_path: Path, cleanup
):
    receiver = (GrpcReceiver() if receiver_kind == "grpc" else HttpReceiver()).start()
    cleanup.append(receiver)
    args = ["--otlp-endpoint", receiver.endpoint, "--otlp-protocol", receiver_kind]
    args += ["--backend", BACKEND]
    exporter = Exporter(redis_broker, tmp_path, args)
    cleanup.append(exporter.start())
    worker = Worker(redis_broker, queue, tmp_path, backend=BACKEND)
    cleanup.append(worker.start())
    wait_worker_up(exporter, worker)
    app = producer(redis_broker, result_backend=BACKEND)

    def sig(name: str, *args, **kwargs):
        return app.signature(name, args=args, kwargs=kwargs, queue=queue)

    roots = {
        "chain": chain(sig("demo.add", 1, 2), sig("demo.add", 3), sig("demo.add", 4)).apply_async(),
        "fan_out": sig("demo.fan_out", 2).apply_async(),
        "fan_in": sig("demo.fan_in", 2).apply_async(),
        "spawn": sig("demo.spawn", 2).apply_async(),
        "flaky": sig("demo.flaky", "k", failures=2).apply_async(),
        "fail": sig("demo.fail", "boom").apply_async(),
        "big": sig("demo.big", "p" * 2000).apply_async(),
        "login": sig("demo.login", "bob", password=SECRET).apply_async(),
    }
    chain_root = roots["chain"].parent.parent.id
    trace_of = {k: r.id.replace("-", "") for k, r in roots.items()}
    trace_of["chain"] = chain_root.replace("-", "")
    sizes = {"chain": 3, "fan_out": 3, "fan_in": 4, "spawn": 3, "flaky": 3}

    def traces() -> dict[str, list[Span]] | None:
        by_trace: dict[str, list[Span]] = defaultdict(list)
        for span in receiver.snapshot():
            by_trace[span.trace_id].append(span)
        out = {k: by_trace.get(t, []) for k, t in trace_of.items()}
        done = all(len(out[k]) >= sizes.get(k, 1) for k in out)
        return out if done else None

    try:
        got = wait_for(traces, 90, "every span of the workload", every=0.5)
    finally:
        seen = defaultdict(list)
        for span in receiver.snapshot():
            seen[span.trace_id].append(span.name)
        print({k: seen.get(t) for k, t in trace_of.items()})
        print(exporter.proc.output()[-3000:])
    for kind, spans in got.items():
        assert len(spans) == sizes.get(kind, 1), (kind, [s.name for s in spans])
        assert len({s.span_id for s in spans}) == len(spans)

    def tree(spans: list[Span]) -> dict[str, str]:
        """task id → parent task id, read from span ids alone."""
        by_span = {s.span_id: s.attributes["celery.task.id"] for s in spans}
        return {s.attributes["celery.task.id"]: by_span.get(s.parent_id, "") for s in spans}

    chain_tree = tree(got["chain"])
    assert chain_tree[chain_root] == ""
    middle = roots["chain"].parent.id
    assert chain_tree[middle] == chain_root and chain_tree[roots["chain"].id] == middle
    for kind in ("fan_out", "spawn"):
        t = tree(got[kind])
        children = [task for task, parent in t.items() if parent == roots[kind].id]
        assert len(children) == 2 and t[roots[kind].id] == ""
    fan_in = tree(got["fan_in"])
    header = {task for task, parent in fan_in.items() if parent == roots["fan_in"].id}
    (callback,) = [task for task, parent in fan_in.items() if parent in header]
    assert len(header) == 2 and callback not in header

    flaky = sorted(got["flaky"], key=lambda s: s.attributes["celery.task.retries"])
    assert [s.attributes["celery.task.retries"] for s in flaky] == [0, 1, 2]
    assert [s.attributes["celery.task.state"] for s in flaky] == ["RETRY", "RETRY", "SUCCESS"]
    # Each retry is sent with one failure less: every span shows the kwargs it ran with.
    kwargs = [s.attributes["celery.task.kwargs"] for s in flaky]
    assert kwargs == [f"{{'failures': {n}}}" for n in (2, 1, 0)]
    assert all(s.status == 0 for s in flaky), "retries are not errors"
    # Sibling attempts, though Celery names the task its retry's parent.
    assert all(s.parent_id == "" for s in flaky)
    reasons = [s.attributes.get("celery.task.retry.reason") for s in flaky]
    assert reasons == [
        f"Retry in 0.2s: RuntimeError('k not ready (attempt {n})')" for n in (1, 2)
    ] + [None]

    (fail,) = got["fail"]
    assert fail.status == 2 and fail.attributes["error.type"] == "ValueError"
    (exc,) = [e for e in fail.events if e[0] == "exception"]
    assert "ValueError" in exc[2]["exception.stacktrace"]

    (big,) = got["big"]
    fetches = select(exporter.scrape(), "clearly_exporter_result_fetches_total")
    assert big.attributes["celery.task.result.source"] == "backend", fetches
    assert len(big.attributes["celery.task.result"]) >= 5000
    assert "..." not in big.attributes["celery.task.result"]

    (login,) = got["login"]
    assert "[redacted]" in login.attributes["celery.task.kwargs"]
    assert all(SECRET.encode() not in body for body in receiver.raw)

    for spans in got.values():
        for span in spans:
            assert span.name == "run " + span.attributes["celery.task.name"]
            assert span.kind == 5  # SPAN_KIND_CONSUMER
            assert span.attributes["messaging.system"] == "redis"
            assert span.resource["service.name"] == "celery"

    def counted() -> Samples | None:  # the span process reports right after sending
        samples = exporter.scrape()
        exported = select(samples, "clearly_exporter_spans_exported_total")[()]
        return samples if exported >= 19 else None

    samples = wait_for(counted, 10, "the exported spans counted")
    assert select(samples, "clearly_exporter_spans_dropped_total", reason="export_error") == {
        (): 0.0
    }
    assert select(samples, "clearly_exporter_result_fetches_total", outcome="ok")[()] >= 1


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_exemplars_only_in_openmetrics(redis_broker: str, queue: str, tmp_path: Path, cleanup):
    receiver = GrpcReceiver().start()
    cleanup.append(receiver)
    exporter = Exporter(redis_broker, tmp_path, ["--otlp-endpoint", receiver.endpoint])
    cleanup.append(exporter.start())
    worker = Worker(redis_broker, queue, tmp_path)
    cleanup.append(worker.start())
    result = producer(redis_broker, result_backend=BACKEND).send_task(
        "demo.add", (1, 1), queue=queue
    )
    trace = result.id.replace("-", "")
    wait_for(
        lambda: select(exporter.scrape(), "celery_task_runtime_seconds_count", queue=queue),
        60,
        "runtime observed",
    )
    _, openmetrics, _ = http_get(
        exporter.url + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert f'# {{trace_id="{trace}"}}' in openmetrics
    _, text, _ = http_get(exporter.url + "/metrics")
    assert "trace_id" not in text


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_collector_down_never_stops_event_processing(
    redis_broker: str, queue: str, tmp_path: Path, cleanup
):
    args = ["--otlp-endpoint", "http://127.0.0.1:1", "--otlp-timeout", "1s"]
    exporter = Exporter(redis_broker, tmp_path, args)
    cleanup.append(exporter.start())
    worker = Worker(redis_broker, queue, tmp_path)
    cleanup.append(worker.start())
    app = producer(redis_broker, result_backend=BACKEND)
    for i in range(30):
        app.send_task("demo.add", (i, i), queue=queue)

    def succeeded() -> float:
        counts = select(exporter.scrape(), "celery_tasks_total", queue=queue, state="SUCCESS")
        return counts.get((("name", "demo.add"),), 0)

    wait_for(lambda: succeeded() == 30, 60, "all 30 tasks counted")
    wait_for(
        lambda: (
            select(
                exporter.scrape(), "clearly_exporter_spans_dropped_total", reason="export_error"
            ).get((), 0)
            >= 30
        ),
        60,
        "drops counted",
    )
    assert exporter.proc.popen.poll() is None


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_sigterm_flushes_spans_and_stops_in_time(
    redis_broker: str, queue: str, tmp_path: Path, cleanup
):
    receiver = GrpcReceiver().start()
    cleanup.append(receiver)
    exporter = Exporter(redis_broker, tmp_path, ["--otlp-endpoint", receiver.endpoint])
    cleanup.append(exporter.start())
    worker = Worker(redis_broker, queue, tmp_path)
    cleanup.append(worker.start())
    app = producer(redis_broker, result_backend=BACKEND)
    ids = {app.send_task("demo.add", (i, i), queue=queue).id for i in range(5)}

    def succeeded() -> float:
        counts = select(exporter.scrape(), "celery_tasks_total", queue=queue, state="SUCCESS")
        return counts.get((("name", "demo.add"),), 0)

    wait_for(lambda: succeeded() == 5, 60, "five tasks counted")
    stopping = time.monotonic()
    assert exporter.stop() == 0
    assert time.monotonic() - stopping < 10
    exported = {s.attributes["celery.task.id"] for s in receiver.snapshot()}
    assert ids <= exported, "spans still within their grace were flushed at SIGTERM"


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_sigterm_exports_attempts_still_waiting_for_their_task_name(
    redis_broker: str, tmp_path: Path, cleanup
):
    """Only a worker's events came (no task-sent or task-received, so no name yet)."""
    receiver = GrpcReceiver().start()
    cleanup.append(receiver)
    args = ["--otlp-endpoint", receiver.endpoint, "--name-wait", "600"]
    exporter = Exporter(redis_broker, tmp_path, args)
    cleanup.append(exporter.start())
    named, task_id = str(uuid.uuid4()), str(uuid.uuid4())

    def spans() -> set[str]:
        return {s.attributes["celery.task.id"] for s in receiver.snapshot()}

    def span_of_named() -> bool:
        """A whole task's span: the span process is up (a SIGTERM to the process group
        while it starts would kill it)."""
        now = time.time()
        events = [sent(named, now), received(named, now), started(named, now)]
        publish(redis_broker, [[*events, succeeded(named, now + 0.01, 0.01)]])
        return named in spans()

    def seen() -> bool:
        now = time.time()
        publish(redis_broker, [[started(task_id, now), succeeded(task_id, now + 0.01, 0.01)]])
        return http_get(f"{exporter.url}/api/tasks/{task_id}")[0] == 200

    wait_for(span_of_named, 30, "a span of a task with a name", every=0.5)
    wait_for(seen, 30, "the nameless task's events received")
    assert task_id not in spans()
    assert exporter.stop() == 0
    assert task_id in spans()

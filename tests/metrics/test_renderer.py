"""The render process: the same body as rendering in the exporter's own process, kept up
to date by changes alone, and a scrape served whatever becomes of the process."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys

import pytest
from prometheus_client.core import GaugeMetricFamily

from clearly_exporter.engine import slab as slab_module
from clearly_exporter.metrics import renderer as renderer_module
from clearly_exporter.metrics.bodyfile import body_file
from clearly_exporter.metrics.exposition import (
    Caches,
    ScalarFamily,
    generate,
    generate_chunks,
)
from clearly_exporter.metrics.renderer import NICENESS, SEGMENTS, RenderError, RenderProcess
from clearly_exporter.metrics.rows import RowsFamily
from tests.engine.events import worker_event
from tests.metrics.test_chunked import dechunk, received
from tests.metrics.test_exposition import OPENMETRICS, SCRAPE_DURATION, Cluster, busy_cluster
from tests.support import wait_for


def lines(body: bytes) -> list[bytes]:
    """The body's lines but the scrape's own duration, which differs between two."""
    return [line for line in body.splitlines() if SCRAPE_DURATION.encode() not in line]


def scrape(renderer: RenderProcess, cluster: Cluster, accept: str) -> bytes:
    with body_file() as body:
        size, content_type = renderer.scrape(cluster.registry, accept, body.fileno())
        assert content_type == generate(cluster.registry, accept)[1]
        body.seek(0)
        data = body.read()
    assert len(data) == size
    return data


def steps(cluster: Cluster):
    """State changes each family sees: values, new series, gone and reordered series."""
    yield
    cluster.task("f")
    yield
    cluster.task("g", name="app.new", queue="q2")
    cluster.now += 7
    yield
    cluster.feed(worker_event("worker-heartbeat", "celery@w0", cluster.now))
    yield
    cluster.feed(worker_event("worker-offline", "celery@w1", cluster.now))
    cluster.engine.workers.purge_after = 0.0
    cluster.now += 1
    yield
    for i in range(7):
        cluster.task(f"n{i}", name=f"app.t{i % 3}", queue=f"q{i % 2}", fail=i % 4 == 0)
        yield


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def renderer(clock):
    process = RenderProcess(clock)
    yield process
    process.stop()


def test_the_render_process_writes_what_this_process_renders(renderer):
    cluster = busy_cluster()
    for n, _ in enumerate(steps(cluster)):
        accept = OPENMETRICS if n % 3 == 1 else ""
        assert lines(scrape(renderer, cluster, accept)) == lines(
            generate(cluster.registry, accept)[0]
        )
    assert renderer.failures == 0
    pid = renderer.pid
    assert pid is not None and pid != os.getpid()


def streamed(renderer: RenderProcess, cluster: Cluster, accept: str, gzipped: bool) -> bytes:
    """A scrape the process streams to a socket (and its spill file): the body sent."""
    ours, theirs = socket.socketpair()
    with ours, theirs, body_file() as spill:
        ours.setblocking(False)
        spilled = renderer.stream(cluster.registry, accept, ours.fileno(), spill.fileno(), gzipped)
        assert spilled is not None, "not cut"
        ours.shutdown(socket.SHUT_WR)
        body = dechunk(received(theirs) + os.pread(spill.fileno(), spilled, 0))
    return gzip.decompress(body) if gzipped else body


def test_a_streamed_scrape_is_what_this_process_renders(renderer):
    """Streamed and rendered into a file in turn: the process's copy stays right."""
    cluster = busy_cluster()
    for n, _ in enumerate(steps(cluster)):
        accept = OPENMETRICS if n % 3 == 1 else ""
        expected = lines(generate(cluster.registry, accept)[0])
        if n % 2:
            assert lines(scrape(renderer, cluster, accept)) == expected
        else:
            assert lines(streamed(renderer, cluster, accept, gzipped=n % 4 == 0)) == expected
    assert renderer.failures == 0


def test_a_stream_with_no_process_is_rendered_here(renderer, clock):
    """Stopped, or between failures: the exporter writes the chunks itself."""
    cluster = busy_cluster()
    renderer.stop()
    expected = lines(generate(cluster.registry, OPENMETRICS)[0])
    assert lines(streamed(renderer, cluster, OPENMETRICS, gzipped=True)) == expected
    assert renderer.failures == 0 and renderer.pid is None


def dead(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "\nState:\tZ" in status.read()
    except FileNotFoundError:
        return True


def test_a_process_gone_before_it_has_the_socket_costs_no_scrape(renderer):
    """It failed before any of the body was out: counted once, rendered here."""
    cluster = busy_cluster()
    renderer.start()
    pid = renderer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dead(pid), 10, "it died")
    assert lines(streamed(renderer, cluster, "", gzipped=False)) == lines(
        generate(cluster.registry, "")[0]
    )
    assert renderer.failures == 1


def test_a_stream_that_fails_is_told_after_its_tail(renderer, monkeypatch, caplog):
    """The process reports it where the exporter waits for the answer; the next scrape
    is rendered here, as after any failure."""
    cluster = busy_cluster()
    spec = ScalarFamily.spec.fget
    monkeypatch.setattr(ScalarFamily, "spec", property(lambda f: spec(f)._replace(labels=("x",))))
    with pytest.raises(RenderError, match="ValueError"):
        streamed(renderer, cluster, "", gzipped=False)
    assert renderer.failures == 1 and not renderer.ready()
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])


def test_the_request_goes_before_the_engine_lock_is_released(renderer, monkeypatch):
    """After it, each system call of the send waits for the GIL behind the consumer."""
    cluster = busy_cluster()
    held = []
    send = renderer._send

    def spy(kind: int, payload: bytes, fds: list[int]) -> None:
        held.append(cluster.engine.lock.locked())
        send(kind, payload, fds)

    monkeypatch.setattr(renderer, "_send", spy)
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert len(held) > 1 and all(held), "the segments, then the request"


def test_each_segment_is_handed_over_once_and_again_to_a_new_process(renderer, clock, monkeypatch):
    """Segments of 512 rows: series past them make new ones, which the process maps at the
    next scrape; a new process maps them all. It renders what this process renders."""
    monkeypatch.setattr(slab_module, "SEGMENT_BYTES", 4096)
    cluster = busy_cluster()
    handed: list[int] = []
    send = renderer._send

    def spy(kind: int, payload: bytes, fds: list[int]) -> None:
        if kind == SEGMENTS:
            handed.append(len(fds))
        send(kind, payload, fds)

    monkeypatch.setattr(renderer, "_send", spy)

    def segments() -> int:
        families = [m for m in cluster.registry.collect() if isinstance(m, RowsFamily)]
        return sum(len(family.slab.segments) for family in families)

    def scraped() -> list[int]:
        handed.clear()
        assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
        return handed.copy()

    assert sum(scraped()) == segments()
    assert scraped() == [], "mapped already"
    before = segments()
    for i in range(130):  # 520 more celery_tasks series: a second segment
        cluster.task(f"n{i}", name=f"app.t{i}")
    assert sum(scraped()) == segments() - before > 0
    os.kill(renderer.pid, signal.SIGKILL)
    wait_for(lambda: dead(renderer.pid), 10, "it died")
    scraped()  # rendered here
    clock.now += renderer_module.RETRY_AFTER
    assert sum(scraped()) == segments(), "all again to the new process"
    assert renderer.failures == 1


def test_a_dead_render_process_is_replaced_and_no_scrape_is_lost(renderer, clock):
    cluster = busy_cluster()
    scrape(renderer, cluster, "")
    first = renderer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for name in "fg":
        cluster.task(name)
        assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
        assert renderer.failures == 1 and renderer.pid is None, "rendered here for a while"
    clock.now += renderer_module.RETRY_AFTER
    cluster.task("h")
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert renderer.pid not in (None, first)
    assert renderer.failures == 1


def test_while_new_processes_keep_failing_they_are_tried_less_often(renderer, clock, caplog):
    spec = ScalarFamily.spec.fget
    broken = property(lambda f: spec(f)._replace(labels=("x",)))
    cluster = busy_cluster()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ScalarFamily, "spec", broken)
        for backoff in (5, 10, 20, 40):
            scrape(renderer, cluster, "")  # a new process, which fails
            clock.now += backoff - 0.1
            scrape(renderer, cluster, "")  # none: rendered here
            clock.now += 0.1
    assert renderer.failures == 4
    assert "scrapes are rendered in the exporter for 40 s" in caplog.text


def test_an_exporter_that_cannot_start_it_renders_every_scrape_itself(renderer, monkeypatch):
    monkeypatch.setattr(renderer_module.sys, "executable", "/nonexistent/python")
    renderer.start()
    cluster = busy_cluster()
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert renderer.pid is None and renderer.failures == 1


def test_after_stop_the_process_is_gone_and_scrapes_render_here(renderer):
    cluster = busy_cluster()
    scrape(renderer, cluster, "")
    pid = renderer.pid
    renderer.stop()
    assert renderer.pid is None
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the render process to exit")
    assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
    assert renderer.pid is None and renderer.failures == 0


def test_a_render_error_is_reported_and_the_scrape_rendered_here(renderer, monkeypatch, caplog):
    """Whatever the process cannot render, the exporter renders itself."""
    cluster = busy_cluster()
    spec = ScalarFamily.spec.fget
    monkeypatch.setattr(ScalarFamily, "spec", property(lambda f: spec(f)._replace(labels=("x",))))
    body = scrape(renderer, cluster, "")
    assert lines(body) == lines(b"".join(generate_chunks(cluster.registry, "")[0]))
    assert renderer.failures == 1
    assert "rendered in the exporter" in caplog.text and "ValueError" in caplog.text


def test_a_render_process_that_hangs_is_given_up_on(renderer, monkeypatch):
    monkeypatch.setattr(renderer_module, "RENDER_TIMEOUT", 0.5)
    cluster = busy_cluster()
    scrape(renderer, cluster, "")
    stuck = renderer.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)
    try:
        assert lines(scrape(renderer, cluster, "")) == lines(generate(cluster.registry, "")[0])
        assert renderer.failures == 1
        wait_for(lambda: not os.path.exists(f"/proc/{stuck}"), 5, "the stuck process killed")
    finally:
        if os.path.exists(f"/proc/{stuck}"):
            os.kill(stuck, signal.SIGKILL)


class Families:
    """A cached family then a plain one, as the engine's collector yields them; or the
    other way round; or a failure after the cached one."""

    def __init__(self) -> None:
        self.rows = {("a",): 1, ("b",): 2}
        self.caches = Caches()
        self.plain_first = False
        self.fail = False

    def collect(self):
        keys, values = list(self.rows), list(self.rows.values())
        cached = ScalarFamily("c", "doc", "gauge", ("k",), keys, values, self.caches.of("c"))
        plain = GaugeMetricFamily("p", "doc", value=1)
        yield from (plain, cached) if self.plain_first else (cached,)
        if self.fail:
            raise RuntimeError("a collector's bug")
        if not self.plain_first:
            yield plain


def body_of(renderer: RenderProcess, registry: Families) -> bytes:
    with body_file() as body:
        renderer.scrape(registry, "", body.fileno())
        body.seek(0)
        return body.read()


def test_a_failed_collection_leaves_no_series_stale(renderer):
    """The process may not have got what was found changed: it starts over."""
    families = Families()
    body_of(renderer, families)
    families.rows[("a",)] = 100
    families.fail = True
    with pytest.raises(RuntimeError):
        body_of(renderer, families)
    families.fail = False
    assert body_of(renderer, families) == generate(families, "")[0]
    assert b'c{k="a"} 100' in body_of(renderer, families)


def test_a_value_that_cannot_be_sent_gets_the_scrape_rendered_here(renderer, caplog):
    """Found while the family is pickled: that scrape is rendered here, a later one by a
    new process."""

    class Local(float):
        """A local class: pickle cannot name it."""

    families = Families()
    families.rows[("b",)] = Local(2.5)
    assert body_of(renderer, families) == generate(families, "")[0]
    assert renderer.failures == 1
    assert "cannot send the series" in caplog.text
    families.rows[("b",)] = 3.5
    renderer.clock.now += renderer_module.RETRY_AFTER
    assert b'c{k="b"} 3.5' in body_of(renderer, families)
    assert renderer.pid is not None


def test_a_cached_family_after_a_plain_one_is_rendered_here(renderer):
    families = Families()
    families.plain_first = True
    assert body_of(renderer, families) == generate(families, "")[0]
    assert renderer.failures == 1


def test_group_signals_do_not_reach_it(renderer):
    """Ctrl-C in a terminal signals the exporter's whole process group."""
    renderer.start()
    pid = renderer.pid
    assert pid is not None and os.getsid(pid) == pid != os.getsid(0)


def test_it_runs_nicer_than_the_exporter(renderer):
    """A backlog draining keeps the CPU to itself before a scrape's render."""
    if os.getpriority(os.PRIO_PROCESS, 0) >= 19:
        pytest.skip("this process already runs at the lowest priority")
    renderer.start()
    nicer = min(os.getpriority(os.PRIO_PROCESS, 0) + NICENESS, 19)
    wait_for(
        lambda: os.getpriority(os.PRIO_PROCESS, renderer.pid) == nicer,
        30,
        "the render process to lower its priority",
    )


def test_started_by_hand_it_says_how_it_is_meant_to_run():
    result = subprocess.run(
        [sys.executable, "-m", "clearly_exporter.metrics.renderer"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_a_stream_goes_a_family_at_a_time_as_each_is_taken(renderer, monkeypatch):
    """The process renders and sends one family while the exporter takes the next from
    the engine; a body file waits for them all."""
    cluster = busy_cluster()
    order: list[str] = []
    send = renderer._send

    def spy(kind: int, payload: bytes, fds: list[int]) -> None:
        order.append(f"send {kind}")
        send(kind, payload, fds)

    monkeypatch.setattr(renderer, "_send", spy)

    class Watched:
        def collect(self):
            for metric in cluster.registry.collect():
                order.append(f"take {metric.name}")
                yield metric

    expected = lines(generate(cluster.registry, "")[0])
    ours, theirs = socket.socketpair()
    with ours, theirs, body_file() as spill:
        ours.setblocking(False)
        spilled = renderer.stream(Watched(), "", ours.fileno(), spill.fileno(), False)
        assert spilled is not None
        ours.shutdown(socket.SHUT_WR)
        body = dechunk(received(theirs) + os.pread(spill.fileno(), spilled, 0))
    assert lines(body) == expected
    requests = [entry for entry in order if entry != f"send {SEGMENTS}"]
    assert requests[:4] == [
        "take celery_tasks",
        f"send {renderer_module.STREAM}",
        "take celery_task_failures",
        f"send {renderer_module.PART}",
    ]
    order.clear()
    with body_file() as file:
        size, _ = renderer.scrape(Watched(), "", file.fileno())
        assert lines(os.pread(file.fileno(), size, 0)) == expected
    sends = [entry for entry in order if entry.startswith("send")]
    assert sends == [f"send {renderer_module.FILE}"], "a body file waits for them all"

"""The HTTP server as deployed: basic auth on every path, TLS with client certificates,
and ``--no-api``; each on a real exporter child process. ``/metrics`` of many blocks, in process."""

from __future__ import annotations

import array
import fcntl
import gzip
import json
import os
import re
import socket
import termios
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from urllib.request import Request, urlopen

import bcrypt
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from clearly_exporter.daemon import Daemon, Settings
from clearly_exporter.engine import Engine
from clearly_exporter.metrics import bodyfile
from clearly_exporter.metrics.collector import EngineCollector
from clearly_exporter.metrics.exposition import generate
from clearly_exporter.metrics.renderer import RenderProcess
from clearly_exporter.metrics.rows import RowsFamily
from clearly_exporter.server import HttpServer
from clearly_exporter.source import BrokerHealth
from tests.cluster import api_get, publish
from tests.engine.events import T0, received, sent, started, succeeded
from tests.metrics.test_chunked import dechunk
from tests.support import (
    Exporter,
    basic_auth,
    http_get,
    make_tls_files,
    raw_http,
    wait_for,
)

USER, PASSWORD = "prometheus", "right horse battery"


def filesystem_broker(tmp_path: Path) -> str:
    folder = tmp_path / "broker"
    folder.mkdir()
    return f"filesystem://{folder}"


def web_config(folder: Path, text: str) -> Path:
    path = folder / "web.yml"
    path.write_text(text)
    return path


def plant_task(exporter: Exporter, name: str, argument: str) -> str:
    """A task whose args carry ``argument``, seen by the exporter (asked with credentials)."""
    task_id = str(uuid.uuid4())
    event = received(task_id, time.time(), name=name, args=repr((argument,)))

    def stored() -> bool:
        publish(exporter.broker, [event])  # again each time: a duplicate changes nothing
        status, body, _ = exporter.get(f"/api/tasks/{task_id}")
        return status == 200 and argument in body

    wait_for(stored, 30, "the planted task", every=0.5)
    return task_id


def test_basic_auth_guards_every_path_and_leaks_nothing(tmp_path: Path, cleanup):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    config = web_config(tmp_path, f"basic_auth_users:\n  {USER}: {hashed}\n")
    exporter = Exporter(
        filesystem_broker(tmp_path),
        tmp_path,
        ["--web-config", str(config)],
        client_headers=basic_auth(USER, PASSWORD),
    )
    cleanup.append(exporter.start())
    marker = f"planted-{uuid.uuid4().hex}"
    task_id = plant_task(exporter, "secret.task", marker)

    paths = ["/", "/metrics", "/api/tasks", f"/api/tasks/{task_id}", "/api/stream"]
    paths += ["/api/stats", "/api/workers", "/api/seen-tasks", "/nowhere"]
    refused = [
        {},
        basic_auth(USER, "wrong"),
        basic_auth("mallory", PASSWORD),
        basic_auth(USER, PASSWORD + " "),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Bearer {PASSWORD}"},
    ]
    for path in paths:
        for headers in refused:
            raw = raw_http(exporter.url, path, headers)
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 401 "), (path, headers, raw[:200])
            assert b'\r\nWWW-Authenticate: Basic realm="clearly-exporter"' in head
            for secret in (marker, task_id, "secret.task", PASSWORD):
                assert secret.encode() not in raw, (path, headers, secret)
            if path.startswith("/api/"):
                assert json.loads(body)["error"].startswith("unauthorized")
    assert raw_http(exporter.url, "/api/reset", method="POST").startswith(b"HTTP/1.1 401 ")

    stats = json.loads(exporter.get("/api/stats")[1])
    assert stats["stream_clients"] == 0, "a refused stream never became a client"
    assert stats["tasks_stored"] == 1, "a refused reset forgot nothing"
    status, body, _ = exporter.get("/api/tasks")
    assert status == 200 and marker in body, "with credentials, the same task shows"
    assert exporter.get("/metrics")[0] == 200
    hello = raw_http(exporter.url, "/api/stream", exporter.client_headers, until=b"event: hello")
    assert hello.startswith(b"HTTP/1.1 200 ")
    status, body, _ = http_get(exporter.url + "/healthz")
    assert (status, body) == (200, "ok\n"), "/healthz stays open to probes"


def test_tls_with_client_certificates(tmp_path: Path, cleanup):
    tls = make_tls_files(tmp_path / "tls")
    config = web_config(
        tls.folder,
        "tls_server_config:\n"
        "  cert_file: server.pem\n"
        "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.pem\n",
    )
    trusted = tls.client_context()
    exporter = Exporter(
        filesystem_broker(tmp_path), tmp_path, ["--web-config", str(config)], client_tls=trusted
    )
    cleanup.append(exporter.start())
    assert exporter.url.startswith("https://")
    status, body, _ = exporter.get("/metrics")
    assert status == 200 and "clearly_exporter_build_info" in body

    metrics = exporter.url + "/metrics"
    assert http_get(metrics, context=tls.client_context(with_cert=False))[0] == 0
    assert http_get(metrics)[0] == 0, "the test CA is not trusted by default"
    plain = f"http://127.0.0.1:{exporter.port}"
    assert http_get(plain + "/metrics")[0] == 0
    answer = raw_http(plain, "/metrics")
    assert b"HTTP/1." not in answer and b"clearly_exporter" not in answer
    assert "on https://127.0.0.1:" in exporter.proc.output()


def test_no_api_serves_metrics_only(tmp_path: Path, cleanup):
    exporter = Exporter(filesystem_broker(tmp_path), tmp_path, ["--no-api"])
    cleanup.append(exporter.start())
    for path in ("/api/tasks", "/api/stream", "/api/stats"):
        status, body = api_get(exporter.url, path)
        assert status == 404
        assert body == {"error": "the API is switched off on this exporter (--no-api)"}
    assert exporter.get("/metrics")[0] == 200
    status, index, _ = exporter.get("/")
    assert status == 200 and 'href="metrics"' in index
    assert not re.search(r'href="api/', index)


def test_no_api_creates_no_stream_hub(tmp_path: Path):
    daemon = Daemon(Settings(broker=filesystem_broker(tmp_path), api=False))
    try:
        assert daemon.hub is None
        assert not [r for r in daemon.server.app.router.routes() if "stream" in str(r)]
    finally:
        daemon.server.stop()
        daemon.probe.close()


def busy_registry(tasks: int = 600) -> CollectorRegistry:
    """An engine's families of hundreds of blocks, shared with a render process."""
    engine = Engine(shared=True)
    for i in range(tasks):
        uuid_, name = f"t{i}", f"app.task{i % 300}"
        for event in (sent(uuid_, T0, name=name, queue=f"q{i % 2}"), received(uuid_, T0)):
            engine.handle(event, T0)
        engine.handle(started(uuid_, T0), T0)
        engine.handle(succeeded(uuid_, T0 + 0.5, runtime=0.5), T0 + 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, BrokerHealth(), None, clock=lambda: T0 + 2))
    return registry


def fetch(port: int, accept: str, **headers: str) -> tuple[bytes, Message]:
    """A scrape's body (unchunked) and headers."""
    request = Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept, **headers})
    with urlopen(request, timeout=30) as answer:
        return answer.read(), answer.headers


def framed(body: bytes, headers: Message, streamed: bool) -> bool:
    """Sent as its server sends it: in chunks by a render process, as a file with its
    length by the exporter."""
    if streamed:
        return headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    return int(headers["Content-Length"]) == len(body) and "Transfer-Encoding" not in headers


def without_duration(body: bytes) -> bytes:
    return re.sub(rb"clearly_exporter_scrape_duration_seconds [^\n]*", b"", body)


@pytest.fixture(params=["here", "render process"])
def renderer(request):
    """Scrapes rendered in the server's process, or (as the daemon does) in another."""
    process = RenderProcess() if request.param == "render process" else None
    yield process
    if process is not None:
        process.stop()


def test_metrics_rendered_in_blocks_arrive_whole(monkeypatch, renderer):
    """Hundreds of blocks, written a few at a time into a file, then sent from it: each
    body and its length are its scrape's."""
    monkeypatch.setattr(bodyfile, "IOV_MAX", 7)
    registry = busy_registry()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        for accept in ("application/openmetrics-text; version=1.0.0", "", ""):
            body, headers = fetch(server.port, accept)
            expected = generate(registry, accept)[0]
            assert framed(body, headers, renderer is not None) and len(body) > 500_000
            assert without_duration(body) == without_duration(expected)
    finally:
        server.stop()


def test_concurrent_scrapes_each_get_their_own_body(renderer):
    registry = busy_registry()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    accepts = ["", "application/openmetrics-text; version=1.0.0"] * 3
    try:
        with ThreadPoolExecutor(len(accepts)) as pool:
            answers = list(pool.map(lambda accept: fetch(server.port, accept), accepts))
        for accept, (body, headers) in zip(accepts, answers, strict=True):
            assert framed(body, headers, renderer is not None)
            assert without_duration(body) == without_duration(generate(registry, accept)[0])
    finally:
        server.stop()


def test_a_scraper_asking_for_gzip_gets_the_scrape_gzipped(renderer):
    """As Prometheus asks: the same exposition, a tenth of the bytes on the wire."""
    registry = busy_registry()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        for accept in ("", "application/openmetrics-text; version=1.0.0"):
            packed, got = fetch(server.port, accept, **{"Accept-Encoding": "deflate, gzip;q=0.9"})
            body = gzip.decompress(packed)
            assert got["Content-Encoding"] == "gzip" and got["Vary"] == "Accept-Encoding"
            assert framed(packed, got, renderer is not None) and len(packed) < len(body) // 10
            assert without_duration(body) == without_duration(generate(registry, accept)[0])
        plain, headers = fetch(server.port, "")
        assert "Content-Encoding" not in headers, "not asked: not gzipped"
        assert framed(plain, headers, renderer is not None) and plain.startswith(b"# HELP")
    finally:
        server.stop()


class Shrinking:
    """A collector of 20,000 series, then of 10."""

    def __init__(self) -> None:
        self.scrapes = 0

    def collect(self):
        family = GaugeMetricFamily("x", "x", labels=["l"])
        for i in range(20_000 if self.scrapes == 0 else 10):
            family.add_metric([f"{i:06d}"], 1)
        self.scrapes += 1
        yield family

    def describe(self):
        return []


def test_a_body_smaller_than_its_file_made_ahead_is_sent_alone():
    """The file made for the next scrape after a large one is larger than a smaller body:
    the answer is the body alone."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Shrinking())
    server = HttpServer("127.0.0.1", 0, registry, lambda: None)
    server.start()
    try:
        large, _ = fetch(server.port, "")
        wait_for(lambda: server._bodies._spare is not None, 30, "the next body file")
        body, headers = fetch(server.port, "")
        assert len(large) > 300_000 and len(body) < 1_000
        assert framed(body, headers, streamed=False)
        assert body.count(b"\n") == 12 and b"\0" not in body
    finally:
        server.stop()


class Tagged:
    """A collector whose every scrape names its series after the scrape: ``A``, ``B``..."""

    def __init__(self, series: int = 20_000) -> None:
        self.scrapes = 0
        self.series = series

    def collect(self):
        tag = "AB"[min(self.scrapes, 1)]
        self.scrapes += 1
        family = GaugeMetricFamily("x", "x", labels=["l"])
        for i in range(self.series):
            family.add_metric([f"{tag}{i:06d}"], 1)
        yield family

    def describe(self):
        return []


def request_bytes(port: int, *requests: str, headers: str = "") -> bytes:
    """Requests on one connection, each with ``headers``, the last one closing it."""
    heads = [f"{r} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}" for r in requests]
    heads[-1] += "Connection: close\r\n"
    return "\r\n".join(heads).encode() + b"\r\n"


def receive_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    return data


def test_a_slow_reader_gets_its_own_scrape_not_the_next_one():
    """sendfile queues the file's pages on the socket: a body written over them would
    reach a client that had not read yet."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Tagged())
    server = HttpServer("127.0.0.1", 0, registry, lambda: None)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            slow.sendall(request_bytes(server.port, "GET /metrics"))
            waiting = array.array("i", [0])

            def queued() -> int:
                fcntl.ioctl(slow, termios.FIONREAD, waiting)
                return waiting[0]

            wait_for(lambda: queued() > 370_000, 30, "the first scrape queued on its socket")
            assert b'l="B' in fetch(server.port, "")[0]
            first = receive_all(slow).split(b"\r\n\r\n", 1)[1]
        assert first.count(b'l="A') == 20_000 and b'l="B' not in first
    finally:
        server.stop()


def test_a_slow_reader_of_a_streamed_scrape_holds_up_no_other():
    """The render process writes what the socket takes at once, spills the rest and goes
    on: another scrape is served before the slow reader reads a byte of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Tagged(series=60_000))
    renderer = RenderProcess()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        with socket.socket() as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 10)
            slow.settimeout(30)
            slow.connect(("127.0.0.1", server.port))
            slow.sendall(request_bytes(server.port, "GET /metrics"))
            other, headers = fetch(server.port, "")
            assert framed(other, headers, streamed=True) and b'l="B' in other
            head, body = receive_all(slow).split(b"\r\n\r\n", 1)
        assert b"Transfer-Encoding: chunked" in head
        assert body.endswith(b"\r\n0\r\n\r\n"), "ended by the server's last chunk"
        first = dechunk(body[: -len(b"0\r\n\r\n")])
        assert len(first) > 1_000_000, "more than the socket could hold: the rest spilled"
        assert first.count(b'l="A') == 60_000 and b'l="B' not in first
        assert renderer.failures == 0
    finally:
        server.stop()
        renderer.stop()


def test_a_render_process_failing_under_a_stream_closes_the_connection(monkeypatch, caplog):
    """The headers went out: the scraper gets a cut body and a closed connection, never a
    wrong body; the next scrape is rendered in the exporter, whole. The failure is told
    once, as a warning without a traceback."""
    registry = busy_registry(20)
    renderer = RenderProcess()
    spec = RowsFamily.spec.fget
    monkeypatch.setattr(RowsFamily, "spec", property(lambda f: spec(f)._replace(labels=("x",))))
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(request_bytes(server.port, "GET /metrics"))
            answer = receive_all(sock)
        assert answer.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in answer
        assert not answer.endswith(b"\r\n0\r\n\r\n"), "no last chunk: a failed scrape"
        assert renderer.failures == 1
        body, headers = fetch(server.port, "")
        assert framed(body, headers, streamed=False)
        told = [(r.levelname, r.exc_info is None) for r in caplog.records]
        assert told == [("WARNING", True)] and "the render process failed" in caplog.text
        assert without_duration(body) == without_duration(generate(registry, "")[0])
    finally:
        server.stop()
        renderer.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_streamed_scrapes_on_one_connection_each_end_and_leave_no_descriptor():
    """Prometheus keeps its connection: pipelined scrapes are answered in turn, each body
    whole and ended, and nothing the streams used stays open."""
    registry = busy_registry(20)
    renderer = RenderProcess()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        fetch(server.port, "")  # the render process started, the pools made
        before = open_fds()
        expected = without_duration(generate(registry, "")[0])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(request_bytes(server.port, "GET /metrics", "GET /metrics"))
                answer = receive_all(sock)
            responses = answer.split(b"HTTP/1.1 200 OK\r\n")[1:]
            assert len(responses) == 2
            for response in responses:
                head, body = response.split(b"\r\n\r\n", 1)
                assert b"Transfer-Encoding: chunked" in head
                assert body.endswith(b"\r\n0\r\n\r\n")
                assert without_duration(dechunk(body[: -len(b"0\r\n\r\n")])) == expected
        # ``before`` may count the first fetch's connection, not yet closed: a leak of one
        # descriptor a stream would still show, six times over.
        wait_for(lambda: open_fds() <= before, 10, "the streams' descriptors closed")
    finally:
        server.stop()
        renderer.stop()


class FailingAfter:
    """An engine's families, then a family of its own that fails when asked to."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.fail = False

    def collect(self):
        yield from self.registry.collect()
        if self.fail:
            raise RuntimeError("a collector's bug after the engine's families")

    def describe(self):
        return []


def test_a_collector_failing_after_the_hand_over_cuts_that_scrape_alone():
    """The render process has the socket: that scrape is cut short; the next is whole."""
    engine_families = busy_registry(20)
    failing = FailingAfter(engine_families)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(failing)
    renderer = RenderProcess()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        failing.fail = True
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(request_bytes(server.port, "GET /metrics"))
            answer = receive_all(sock)
        assert answer.startswith(b"HTTP/1.1 200") and not answer.endswith(b"\r\n0\r\n\r\n")
        failing.fail = False
        body, headers = fetch(server.port, "")
        assert framed(body, headers, streamed=True)
        assert without_duration(body) == without_duration(generate(engine_families, "")[0])
    finally:
        server.stop()
        renderer.stop()


def test_an_http_1_0_scraper_gets_the_body_with_its_length():
    """HTTP/1.0 has no chunks: the render process renders into the file, as for TLS."""
    registry = busy_registry(20)
    renderer = RenderProcess()
    server = HttpServer("127.0.0.1", 0, registry, lambda: None, renderer=renderer)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            head, body = receive_all(sock).split(b"\r\n\r\n", 1)
        told = re.search(rb"Content-Length: (\d+)\r\n", head)
        assert told and int(told[1]) == len(body) and b"Transfer-Encoding" not in head
        assert without_duration(body) == without_duration(generate(registry, "")[0])
        assert renderer.pid is not None, "rendered by the process"
    finally:
        server.stop()
        renderer.stop()


@pytest.mark.parametrize("encoding", ["", "Accept-Encoding: gzip\r\n"])
def test_head_of_metrics_sends_no_body(encoding):
    """A body after a HEAD answer would be read as the next response on the connection.
    Asked as Prometheus asks, it tells the body's length as it is, not compressed."""
    registry = busy_registry(20)
    server = HttpServer("127.0.0.1", 0, registry, lambda: None)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                request_bytes(server.port, "HEAD /metrics", "GET /healthz", headers=encoding)
            )
            answer = receive_all(sock)
            length = len(fetch(server.port, "")[0])
    finally:
        server.stop()
    head, rest = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Encoding" not in head
    told = re.search(rb"Content-Length: (\d+)\r\n", head)
    assert told and abs(int(told[1]) - length) < 100, "the body's length as it is (± its timing)"
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\nok\n")

"""Real parts for integration tests: brokers, exporter and worker processes, scrapes."""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from clearly_exporter.brokers import connection_config, transport_for

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


def http_get(
    url: str,
    headers: dict | None = None,
    timeout: float = 10,
    context: ssl.SSLContext | None = None,
) -> tuple[int, str, dict]:
    """Status, body and headers; status 0 when no HTTP answer came (refused, TLS failed)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
    except OSError:
        return 0, "", {}


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def raw_http(
    base: str,
    path: str,
    headers: dict | None = None,
    method: str = "GET",
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
    until: bytes | None = None,
) -> bytes:
    """Every byte of one response (status line, headers, body), read until the server
    closes (or ``until`` arrives); for checking what a response carries, not what a client
    library shows."""
    url = urllib.parse.urlsplit(base)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as plain:
        sock = context.wrap_socket(plain, server_hostname=url.hostname) if context else plain
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = b""
        while (until is None or until not in raw) and (chunk := sock.recv(65536)):
            raw += chunk
        return raw


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
    #: How the tests' own requests reach it: a TLS context, headers (basic auth).
    client_tls: ssl.SSLContext | None = None
    client_headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, wait_healthy: bool = True) -> Exporter:
        cmd = [sys.executable, "-m", "clearly_exporter", "run", "--broker", self.broker]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *self.args]
        log = self.tmp / f"exporter-{self.port}.log"
        self.proc = Proc(cmd, child_env(), log).start()
        try:
            wait_for(lambda: self.get("/healthz")[0] in (200, 503), 30, "exporter up")
            if wait_healthy:
                wait_for(lambda: self.get("/healthz")[0] == 200, 30, "exporter healthy")
        except BaseException:
            # Not yet in the caller's cleanup: stopped here, or it outlives the test.
            self.proc.stop()
            raise
        return self

    def get(self, path: str, **kwargs) -> tuple[int, str, dict]:
        """``http_get`` of a path, with the client's TLS context and headers."""
        kwargs.setdefault("headers", self.client_headers)
        return http_get(self.url + path, context=self.client_tls, **kwargs)

    def scrape(self) -> Samples:
        status, body, _ = self.get("/metrics")
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


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA, a server certificate for 127.0.0.1 and a client's."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, with_cert: bool = True) -> ssl.SSLContext:
        """A client trusting the test CA, presenting the client certificate if asked."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def make_tls_files(folder: Path) -> TlsFiles:
    """A fresh CA and the certificates it signs (EC keys: fast to make)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject, key, issuer, signer, extensions) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("clearly-exporter test CA")
    ca_cert = issue(
        ca_name, ca_key, ca_name, ca_key, [(x509.BasicConstraints(ca=True, path_length=0), True)]
    )
    leaf = [(x509.BasicConstraints(ca=False, path_length=None), True)]
    localhost = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = issue(
        name("127.0.0.1"),
        server_key,
        ca_name,
        ca_key,
        [
            *leaf,
            (localhost, False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = issue(
        name("scraper"),
        client_key,
        ca_name,
        ca_key,
        [*leaf, (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
    )
    ca_path, _ = write("ca", ca_cert, ca_key)
    server = write("server", server_cert, server_key)
    client = write("client", client_cert, client_key)
    return TlsFiles(folder, ca_path, *server, *client)


def producer(broker: str, **conf: object) -> Celery:
    """An app that only sends, with task-sent events on (PENDING states and queue labels)."""
    url, options = connection_config(broker)
    app = Celery("test-producer", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport=transport_for(url),
        broker_transport_options=options,
        task_send_sent_event=True,
        **conf,
    )
    return app


def wait_worker_up(exporter: Exporter, worker: Worker) -> None:
    """Until the exporter reads the worker up (its first heartbeat arrived)."""
    wait_for(
        lambda: select(exporter.scrape(), "celery_worker_up", worker=worker.name) == {(): 1.0},
        60,
        "worker up",
    )

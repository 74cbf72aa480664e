"""Secrets stay in: broker and backend passwords never reach logs, metrics, pages or
errors, and a secret task argument never reaches anything the exporter sends."""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import redis

from clearly_exporter import logs
from clearly_exporter.brokers import BrokerURLError, redact_url, url_passwords, validate
from clearly_exporter.cli import known_secrets
from tests.api.sse import StreamReader
from tests.cluster import SOLO_DB, private_redis
from tests.otlp_receiver import HttpReceiver
from tests.support import (
    Exporter,
    Worker,
    basic_auth,
    producer,
    raw_http,
    select,
    wait_for,
    wait_worker_up,
)

OPENMETRICS = "application/openmetrics-text"
#: Result backend of the secret-argument test: a Redis database no other test uses.
BACKEND_DB = 7


def planted(what: str) -> str:
    return f"PLANTED-{what}-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("url", "shown", "passwords"),
    [
        ("amqp://u:s3cret@h:5672//", "amqp://u:***@h:5672//", {"s3cret"}),
        ("redis://h:6379/0", "redis://h:6379/0", set()),
        ("redis://:p%40ss@h/0", "redis://:***@h/0", {"p%40ss", "p@ss"}),
        ("redis://u:p@ss@h/0", "redis://u:***@h/0", {"p@ss"}),
        ("redis://:pa;ss@h/0", "redis://:***@h/0", {"pa;ss"}),
        ("redis://:p/w@h/0", "redis://:***@h/0", {"p/w"}),
        (
            "sentinel://:pw1@h1:26379;sentinel://:pw2@h2:26379",
            "sentinel://:***@h1:26379;sentinel://:***@h2:26379",
            {"pw1", "pw2"},
        ),
    ],
)
def test_urls_show_no_password(url: str, shown: str, passwords: set[str]):
    assert redact_url(url) == shown
    assert url_passwords(url) == passwords


@pytest.mark.parametrize("url", ["redis://:p/w@h/0", "redis://:p?w@h/0", "redis://:p#w@h/0"])
def test_unencoded_reserved_characters_in_a_password_are_refused(url: str):
    with pytest.raises(BrokerURLError) as caught:
        validate(url)
    assert f"broker URL {redact_url(url)!r} has an '@' after its host" in str(caught.value)
    assert redact_url(url) == "redis://:***@h/0"


@pytest.fixture
def global_logging() -> Iterator[None]:
    """``logs.setup`` changes process-wide state: put it back."""
    root = logging.getLogger()
    handlers, level, hooks = root.handlers[:], root.level, (threading.excepthook, sys.excepthook)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    threading.excepthook, sys.excepthook = hooks
    logging.captureWarnings(False)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_logs_mask_secrets_whoever_writes_them(fmt: str, capsys, global_logging):
    secret = planted("log") + '"\\'  # JSON escapes these: masking must come before
    logs.setup("debug", fmt, {secret})
    logging.getLogger("redis.connection").debug("connecting with %s", secret)
    logging.getLogger("amqp").debug("bad format %d", secret)  # would raise in formatting
    try:
        raise ConnectionError(f"refused for {secret}")
    except ConnectionError:
        logging.getLogger("kombu.connection").exception("lost the broker")
    warnings.warn(f"insecure {secret}", UserWarning, stacklevel=1)

    def die() -> None:
        raise RuntimeError(f"thread saw {secret}")

    thread = threading.Thread(target=die, name="doomed")
    thread.start()
    thread.join()
    try:
        raise ValueError(f"main saw {secret}")
    except ValueError as exc:
        sys.excepthook(ValueError, exc, exc.__traceback__)  # as Python does at a crash
    err = capsys.readouterr().err
    assert secret.split("-")[-1][:20] not in err
    assert err.count("***") == 6, err
    assert "thread doomed died" in err and "crashed" in err and "Traceback" in err
    if fmt == "json":
        entries = [json.loads(line) for line in err.splitlines()]
        assert [e["logger"] for e in entries] == [
            "redis.connection",
            "amqp",
            "kombu.connection",
            "py.warnings",
            "clearly_exporter",
            "clearly_exporter",
        ]
        assert "ConnectionError: refused for ***" in entries[2]["exception"]


def test_every_secret_of_the_command_line_is_masked_in_logs():
    opts = {
        "broker": "sentinel://:b1@h:1;sentinel://:b2@h:2",
        "backend": "redis://:k%2F1@h/1",
        "transport_options": (("sentinel_kwargs", {"password": "t1"}), ("master_name", "m")),
        "use_ssl": (("keyfile", "/k.pem"),),
        "otlp_headers": (("Authorization", "Bearer o1"), ("x-scope-orgid", "tenant")),
    }
    assert known_secrets(opts) == {"b1", "b2", "k%2F1", "k/1", "t1", "Bearer o1"}


def test_planted_passwords_never_leave(tmp_path: Path, cleanup):
    secrets = {k: planted(k) for k in ("broker", "backend", "option", "sentinel", "user")}
    receiver = HttpReceiver().start()
    cleanup.append(receiver)
    hashed = bcrypt.hashpw(secrets["user"].encode(), bcrypt.gensalt(4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  admin: {hashed}\n")
    args = ["--backend", f"redis://:{secrets['backend']}@127.0.0.1:1/1"]
    args += ["--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "http/protobuf"]
    args += ["--broker-transport-option", f'sentinel_kwargs={{"password": "{secrets["option"]}"}}']
    args += ["--queue", "q", "--log-level", "debug", "--web-config", str(config)]
    broker = f"redis://:{secrets['broker']}@127.0.0.1:1/0"
    auth = basic_auth("admin", secrets["user"])
    exporter = Exporter(broker, tmp_path, args, client_headers=auth)
    cleanup.append(exporter.start(wait_healthy=False))
    sentinels = ";".join(f"sentinel://:{secrets['sentinel']}@127.0.0.1:{p}" for p in (1, 2))
    other = Exporter(sentinels, tmp_path, ["--broker-transport-option", "master_name=m"])
    cleanup.append(other.start(wait_healthy=False))

    wait_for(lambda: "unavailable" in exporter.proc.output(), 30, "the broker failure logged")
    sent = []
    for path in ["/metrics", "/", "/healthz", "/api/stats", "/api/tasks", "/api/workers"]:
        sent.append(raw_http(exporter.url, path, auth))
    sent.append(raw_http(exporter.url, "/metrics", {**auth, "Accept": OPENMETRICS}))
    wait_for(lambda: "queue depth probe" in exporter.proc.output(), 30, "the queue probe failure")

    status, reason, _ = exporter.get("/healthz", headers={})
    assert (status, reason) == (503, "unhealthy (authenticate to see why)\n")
    status, reason, _ = exporter.get("/healthz")
    assert status == 503 and reason.startswith("broker not connected: OperationalError: ")
    sent += [raw_http(other.url, path) for path in ("/", "/healthz", "/metrics", "/api/stats")]
    for proc in (exporter, other):
        assert proc.stop() == 0
    log = exporter.proc.output()
    assert "broker redis://:***@127.0.0.1:1/0 unavailable" in log
    started = f"on http://127.0.0.1:{other.port}/metrics, broker sentinel://:***@127.0.0.1:1;"
    assert started in other.proc.output()
    everything = (log + other.proc.output()).encode() + b"".join(sent + receiver.raw)
    for name, secret in secrets.items():
        if name != "user":  # the test itself sent that one, in its requests
            assert secret.encode() not in everything, name
            assert secret.split("-")[-1][:16].encode() not in everything, name


@pytest.fixture
def backend() -> str:
    url = f"redis://127.0.0.1:6379/{BACKEND_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def test_secret_argument_never_leaves(tmp_path: Path, queue: str, backend: str, cleanup):
    broker = private_redis(SOLO_DB)
    secret = planted("kwarg")
    long_secret = secret + "-" + "x" * 1500  # its repr is cut in events: fetched complete
    passwords = {"broker": planted("broker"), "backend": planted("backend")}
    receiver = HttpReceiver().start()
    cleanup.append(receiver)
    args = ["--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "http/protobuf"]
    args += ["--backend", backend.replace("//", f"//:{passwords['backend']}@")]
    args += ["--queue", queue, "--log-level", "debug"]
    exporter = Exporter(broker.replace("//", f"//:{passwords['broker']}@"), tmp_path, args)
    cleanup.append(exporter.start())
    worker = Worker(broker, queue, tmp_path, backend=backend)
    cleanup.append(worker.start())
    stream = StreamReader(exporter.url)
    cleanup.append(stream)
    wait_worker_up(exporter, worker)
    app = producer(broker)
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    app.send_task("demo.login", ("ann",), {"password": secret}, queue=queue, task_id=ids[0])
    app.send_task("demo.login", ("bob",), {"password": long_secret}, queue=queue, task_id=ids[1])

    def spans() -> dict[str, dict] | None:
        found = {s.attributes.get("celery.task.id"): s.attributes for s in receiver.snapshot()}
        return found if all(i in found for i in ids) else None

    exported = wait_for(spans, 60, "both spans", every=0.5)
    stream.wait(
        lambda r: {t["uuid"] for t in r.events("task") if t["state"] == "SUCCESS"} >= set(ids),
        "both successes streamed",
    )
    wait_for(  # the long one completed from the backend; counts trail the spans a moment
        lambda: (
            select(exporter.scrape(), "clearly_exporter_result_fetches_total", outcome="ok")
            == {(): 1.0}
        ),
        10,
        "one complete fetch counted",
    )
    for task_id in ids:
        assert "'[redacted]'" in exported[task_id]["celery.task.kwargs"]
        detail = json.loads(exporter.get(f"/api/tasks/{task_id}")[1])
        assert detail["state"] == "SUCCESS" and "'[redacted]'" in detail["kwargs"]

    paths = ["/metrics", "/", "/healthz", "/api/tasks", "/api/stats", "/api/workers"]
    paths += [f"/api/tasks/{i}" for i in ids] + ["/api/seen-tasks", "/api/tasks?pattern=login"]
    sent = [raw_http(exporter.url, path) for path in paths]
    sent.append(raw_http(exporter.url, "/metrics", {"Accept": OPENMETRICS}))
    assert exporter.stop() == 0
    everything = exporter.proc.output().encode() + stream.raw + b"".join(sent + receiver.raw)
    for name, value in {"kwarg": secret, **passwords}.items():
        assert value.split("-")[-1][:16].encode() not in everything, name

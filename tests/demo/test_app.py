"""The demo app's tasks, run by a real worker on a filesystem broker, checked by real results."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, chain, chord, group
from celery.exceptions import TaskRevokedError

from clearly_exporter.api.complete import completed
from clearly_exporter.brokers import FILESYSTEM
from clearly_exporter.demo.app import BIG_RESULT_CHARS, make_app
from clearly_exporter.demo.backend import default_backend
from clearly_exporter.demo.runner import worker_command
from clearly_exporter.results import ResultFetcher
from tests.support import Proc, child_env, wait_for

#: Generous for a loaded CI machine; a task normally finishes in well under a second.
RESULT_TIMEOUT = 20


@pytest.fixture(scope="module")
def demo_broker(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"filesystem://{tmp_path_factory.mktemp('demo-broker')}"


@pytest.fixture(scope="module")
def client(demo_broker: str) -> Iterator[Celery]:
    """The caller's side: the same configuration as the worker, through ``make_app``."""
    app = make_app(demo_broker, None)
    yield app
    app.close()


@pytest.fixture(scope="module")
def worker(
    demo_broker: str, client: Celery, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    """One worker started exactly as the runner starts it, configured by the environment."""
    log = tmp_path_factory.mktemp("demo-worker") / "worker.log"
    proc = Proc(worker_command(1), child_env(CLEARLY_DEMO_BROKER=demo_broker), log).start()
    wait_for(lambda: client.control.ping(timeout=0.5, limit=1), 30, "the worker to answer a ping")
    yield proc
    assert proc.stop() == 0, proc.output()


def test_make_app_puts_everything_under_a_filesystem_broker_folder(tmp_path: Path):
    app = make_app(f"filesystem://{tmp_path}", None)
    conf = app.conf
    assert conf.broker_url == FILESYSTEM
    assert conf.broker_transport == "clearly_exporter.fstransport:Transport"
    assert conf.broker_transport_options["data_folder_in"] == str(tmp_path / "data")
    assert conf.result_backend == f"file://{tmp_path / 'results'}"
    assert (tmp_path / "results").is_dir()
    assert conf.result_extended and conf.worker_send_task_events and conf.task_send_sent_event
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == conf.result_serializer == "json"


def test_make_app_without_a_filesystem_broker_has_only_the_backend_it_is_given():
    conf = make_app("redis://127.0.0.1:6379/9", None).conf
    assert conf.result_backend is None
    assert conf.broker_transport is None
    explicit = make_app("redis://127.0.0.1:6379/9", "redis://127.0.0.1:6379/8")
    assert explicit.conf.result_backend == "redis://127.0.0.1:6379/8"


def test_module_app_reads_the_environment(tmp_path: Path):
    code = (
        "import json; from clearly_exporter.demo.app import app; "
        "print(json.dumps([app.conf.broker_transport_options, app.conf.result_backend]))"
    )
    env = child_env(
        CLEARLY_DEMO_BROKER=f"filesystem://{tmp_path}", CLEARLY_DEMO_BACKEND=f"file://{tmp_path}"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    options, backend = json.loads(out)
    assert options["control_folder"] == str(tmp_path / "control")
    assert backend == f"file://{tmp_path}"


def test_add_returns_the_sum(client: Celery, worker: Proc):
    result = client.send_task("demo.add", (2, 3))
    assert result.get(timeout=RESULT_TIMEOUT) == 5
    assert result.name == "demo.add"
    assert result.worker.startswith("demo1@")


def test_fail_raises_value_error(client: Celery, worker: Proc):
    result = client.send_task("demo.fail", ("boom",))
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=RESULT_TIMEOUT)
    assert result.state == "FAILURE"


@pytest.mark.parametrize("failures", [0, 2])
def test_flaky_succeeds_after_its_retries(client: Celery, worker: Proc, failures: int):
    result = client.send_task("demo.flaky", ("job-1",), {"failures": failures})
    assert result.get(timeout=RESULT_TIMEOUT) == f"ok after {failures} retries"
    assert result.retries == failures


def test_slow_and_login_return_their_values(client: Celery, worker: Proc):
    slow = client.send_task("demo.slow", (0.05,))
    login = client.send_task("demo.login", ("alice",), {"password": "hunter2"})
    assert slow.get(timeout=RESULT_TIMEOUT) == 0.05
    assert login.get(timeout=RESULT_TIMEOUT) == "hello alice"


def test_big_takes_and_returns_more_than_events_carry(client: Celery, worker: Proc):
    payload = "abc" * 700
    result = client.send_task("demo.big", (payload,)).get(timeout=RESULT_TIMEOUT)
    assert len(payload) > 1024
    assert len(result) == BIG_RESULT_CHARS
    assert result.startswith(payload[::-1])


def test_the_exporter_completes_cut_values_from_the_demo_s_file_backend(
    demo_broker: str, client: Celery, worker: Proc
):
    """What ``demo`` passes the exporter as ``--backend`` serves its fetcher."""
    payload = "abc" * 700
    result = client.send_task("demo.big", (payload,))
    result.get(timeout=RESULT_TIMEOUT)
    backend = default_backend(demo_broker)
    assert backend is not None
    fetcher = ResultFetcher(backend)
    whole = {"args": repr((payload,)), "result": repr(payload[::-1].ljust(BIG_RESULT_CHARS, "#"))}
    cut = {key: value[:1020] + "...'" for key, value in whole.items()}
    try:
        view = asyncio.run(
            completed(fetcher, {"uuid": result.id, "state": "SUCCESS", "kwargs": "{}", **cut})
        )
    finally:
        fetcher.close()
    assert view["values_source"] == "backend"
    assert (view["args"], view["result"]) == (whole["args"], whole["result"])


def test_spawn_children_have_the_spawner_as_parent(client: Celery, worker: Proc):
    result = client.send_task("demo.spawn", (3,))
    assert result.get(timeout=RESULT_TIMEOUT) == 3
    children = result.children
    assert len(children) == 3
    assert sorted(child.get(timeout=RESULT_TIMEOUT) for child in children) == [0, 2, 4]
    for child in children:
        assert client.backend.get_task_meta(child.id)["parent_id"] == result.id


def test_wait_then_is_revoked_before_its_countdown(client: Celery, worker: Proc):
    result = client.send_task("demo.wait_then", (0.1,), countdown=60)
    client.control.revoke(result.id)
    wait_for(lambda: result.state == "REVOKED", RESULT_TIMEOUT, "the task to be revoked")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=RESULT_TIMEOUT)


def test_chain_group_and_chord(client: Celery, worker: Proc):
    add, total = client.signature("demo.add"), client.signature("demo.total")
    chained = chain(add.clone((1, 2)), add.clone((3,)), add.clone((4,))).delay()
    grouped = group(add.clone((i, i)) for i in range(3)).delay()
    chorded = chord([add.clone((i, i)) for i in range(3)])(total)
    assert chained.get(timeout=RESULT_TIMEOUT) == 10
    assert grouped.get(timeout=RESULT_TIMEOUT) == [0, 2, 4]
    assert chorded.get(timeout=RESULT_TIMEOUT) == 6

"""The span process: a real child process making spans for a real OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clearly_exporter.traces import process
from clearly_exporter.traces.process import ChildConfig, SpanProcess
from clearly_exporter.traces.redact import Redactor
from clearly_exporter.traces.spans import AttemptView, SpanSettings
from tests.otlp_receiver import GrpcReceiver
from tests.support import child_env, wait_for

ROOT = Path(__file__).resolve().parents[2]


def view(n: int) -> AttemptView:
    return AttemptView(
        key=(f"task-{n}", 0, 0),
        parent=None,
        name="app.add",
        queue="q1",
        routing_key="q1",
        root_id=None,
        parent_id=None,
        eta=None,
        args="(1, 2)",
        kwargs="{'password': 'hunter2'}",
        result="3",
        state="SUCCESS",
        outcome="SUCCESS",
        t_sent=1.0,
        t_received=1.5,
        t_started=2.0,
        t_ended=3.0,
        worker="celery@w1",
        reached=0,
        inferred=0,
        custom=(),
        exception=None,
        traceback=None,
        incomplete=False,
    )


def config(endpoint: str, max_queue: int = 1000) -> ChildConfig:
    return ChildConfig(
        protocol="grpc",
        endpoint=endpoint,
        headers=None,
        insecure=True,
        timeout=5.0,
        backend=None,
        max_queue=max_queue,
        spans=SpanSettings("redis", "celery", Redactor()),
        resource={"service.name": "celery"},
        logs=None,
    )


@pytest.fixture
def receiver():
    receiver = GrpcReceiver().start()
    yield receiver
    receiver.stop()


def test_views_become_spans_in_the_child_and_counts_come_back(receiver):
    spans = SpanProcess(config(receiver.endpoint))
    spans.start()
    for n in range(600):
        spans.submit(view(n))
    spans.tick()
    spans.stop(time.monotonic() + 10)
    got = {s.attributes["celery.task.id"]: s for s in receiver.snapshot()}
    assert len(got) == 600
    assert spans.exported == 600 and spans.dropped == {"queue_full": 0, "export_error": 0}
    assert "hunter2" not in got["task-7"].attributes["celery.task.kwargs"]
    assert got["task-7"].name == "run app.add"


def test_a_full_queue_refuses_and_a_dead_child_is_counted_and_replaced(receiver, monkeypatch):
    monkeypatch.setattr(process, "RESTART_EVERY", 0.0)
    spans = SpanProcess(config(receiver.endpoint, max_queue=50))
    for n in range(50):
        spans.submit(view(n))
    assert spans.full()
    spans.refuse()
    assert spans.dropped["queue_full"] == 1
    spans.start()
    spans.tick()
    wait_for(lambda: spans.exported == 50, 30, "the first 50 spans")
    os.kill(spans._child.pid, signal.SIGSTOP)  # these 10 reach it, or its pipe, never out
    for n in range(50, 60):
        spans.submit(view(n))
    spans.tick()
    spans._child.kill()
    spans._child.join(10)
    spans.submit(view(100))
    spans.tick()  # sees the death, starts another child, sends what waited
    assert spans._child.is_alive()
    spans.stop(time.monotonic() + 10)
    assert spans.exported == 51
    assert spans.dropped == {"queue_full": 1, "export_error": 10}
    assert "task-100" in {s.attributes["celery.task.id"] for s in receiver.snapshot()}


def test_ctrl_c_and_sigterm_while_the_child_starts_up_do_not_kill_it(receiver, capfd):
    """They reach the whole process group; the exporter alone decides when it stops."""
    spans = SpanProcess(config(receiver.endpoint))
    spans.start()  # the child is still importing when both arrive
    for sig in (signal.SIGINT, signal.SIGTERM):
        os.kill(spans._child.pid, sig)
    for n in range(10):
        spans.submit(view(n))
    spans.tick()
    wait_for(lambda: spans.exported == 10, 30, "the spans, through the same child")
    assert spans._child.is_alive()
    spans.stop(time.monotonic() + 10)
    assert spans.dropped == {"queue_full": 0, "export_error": 0}
    assert "Traceback" not in capfd.readouterr().err


#: A script's start: a span process exporting to ``argv[1]``, given ``{count}`` spans.
SUBMITTED = """
import os, sys, threading
from tests.traces.test_process import config, view
from clearly_exporter.traces.process import SpanProcess
spans = SpanProcess(config(sys.argv[1]))
spans.start()
for n in range({count}):
    spans.submit(view(n))
spans.tick()
"""
ORPHAN = (
    SUBMITTED.format(count=300)
    + """
spans._outbox.put(None)  # the writer sends what it holds, then closes the pipe
(writer,) = [t for t in threading.enumerate() if t.name == "clearly-span-writer"]
writer.join(10)
print(spans._child.pid, flush=True)
os._exit(1)  # dies without stop(): the child sees its pipe closed
"""
)


def run_script(script: str, endpoint: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), endpoint],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_child_whose_exporter_died_flushes_and_exits(receiver):
    script = run_script(ORPHAN, receiver.endpoint)
    child = int(script.stdout.split()[0])
    wait_for(lambda: len(receiver.snapshot()) == 300, 30, "the orphan's spans")

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 15, "the orphaned span process to exit")


def test_it_is_stalled_from_a_death_until_the_restart(receiver, monkeypatch):
    spans = SpanProcess(config(receiver.endpoint))
    assert spans.stalled(), "not started"
    spans.start()
    assert not spans.stalled()
    spans._child.kill()
    spans._child.join(10)
    spans.tick()
    assert spans.stalled(), "dead, and its restart not due for 5 s"
    monkeypatch.setattr(spans, "_restart_after", 0.0)
    spans.tick()
    assert not spans.stalled()
    spans.stop(time.monotonic() + 10)


def test_spans_with_no_process_to_take_them_are_counted_at_stop():
    spans = SpanProcess(config("http://127.0.0.1:9"))
    for n in range(3):
        spans.submit(view(n))
    spans.stop(time.monotonic() + 1)
    assert spans.dropped == {"queue_full": 0, "export_error": 3}


FORGOTTEN = SUBMITTED.format(count=40)


def test_an_exit_without_stop_still_flushes_and_ends(receiver):
    """The child ignores SIGTERM: without a stop message at exit, the exit would hang."""
    script = run_script(FORGOTTEN, receiver.endpoint)
    assert script.returncode == 0, script.stderr
    wait_for(lambda: len(receiver.snapshot()) == 40, 10, "the spans flushed at exit")

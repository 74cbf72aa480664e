"""Every client verb against a running exporter fed by a real worker; errors users can fix."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from clearly_exporter.cli import main
from clearly_exporter.client import ClientError
from tests.cluster import BIG_ARG, TASK_NAMES, Cluster, api_get, private_redis, publish
from tests.engine.events import received, started, succeeded
from tests.support import Exporter, child_env, free_port, wait_for


def cli(*args: str, env: dict | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def ok(cluster: Cluster, *args: str) -> str:
    result = cli(*args, "--url", cluster.url)
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output, "colour on a pipe"
    return result.output


def test_tasks_filters_states_order_and_json(cluster: Cluster):
    ids = cluster.ids
    failures = ok(cluster, "tasks", "DEMO.FAIL")
    assert {ids["fail1"], ids["fail2"]} <= set(failures.split())
    assert failures.count("FAILURE") == 2
    assert "error  ValueError('boom 1')" in failures and "Traceback" in failures
    assert "args   ('boom 2',)" in failures

    others = ok(cluster, "tasks", "demo.fail", "--negate", "--success")
    assert ids["fail1"] not in others and ids["add1"] in others
    assert "result 101" in others and "args   (100, 1)" in others
    assert "result" not in ok(cluster, "tasks", "demo.add")

    assert ok(cluster, "tasks", "--state", "started").split()[1:3] == ["STARTED", "demo.slow"]

    adds = "|".join(ids[f"add{i}"] for i in (1, 2, 3))
    listed = json.loads(ok(cluster, "tasks", adds, "--limit", "2", "--no-reverse", "--json"))
    assert [t["uuid"] for t in listed] == [ids["add1"], ids["add2"]]
    assert listed[0]["result"] == "101"


def test_task_shows_attempts_states_values_and_trace(cluster: Cluster):
    ids = cluster.ids
    shown = ok(cluster, "task", ids["flaky"])
    assert shown.splitlines()[0] == f"demo.flaky {ids['flaky']} SUCCESS"
    assert "  attempt 0 on " in shown and "  attempt 1 on " in shown
    timeline = [line.split()[1] for line in shown.splitlines() if line[4:6].isdigit()]
    assert timeline == [
        "PENDING",
        "RECEIVED",
        "STARTED",
        "RETRY",
        "PENDING",
        "RECEIVED",
        "STARTED",
        "SUCCESS",
    ]
    assert f"trace    {ids['flaky'].replace('-', '')}" in shown
    assert "result 'ok after 1 retries'" in shown

    spawn = json.loads(ok(cluster, "task", ids["spawn"], "--json"))
    assert sorted(spawn["children"]) == sorted([ids["child0"], ids["child1"]])
    assert "'[redacted]'" in ok(cluster, "task", ids["login"])

    big = ok(cluster, "task", ids["big"])
    assert "values   whole, from the result backend" in big
    assert "#" * 100 in big.replace("\n", "").replace(" ", ""), "the whole result, wrapped"
    assert "values" not in ok(cluster, "task", ids["add1"]), "nothing cut, nothing said"
    listed = "".join(ok(cluster, "tasks", "demo.big", "--success").split())
    assert "#" * 100 in listed, "a list shows it whole too"


def test_workers_stats_and_seen_tasks(cluster: Cluster):
    name = cluster.worker.name
    workers = ok(cluster, "workers")
    assert workers.splitlines()[0].split()[:2] == ["ONLINE", name]
    assert "sw_ident=py-celery" in workers
    assert "sw_ident" not in ok(cluster, "workers", "--no-stats")
    assert ok(cluster, "workers", name, "--negate") == ""
    assert json.loads(ok(cluster, "workers", "--json"))[0]["hostname"] == name

    stats = ok(cluster, "stats")
    assert "Tasks processed   13" in stats and "Workers stored    1" in stats
    assert json.loads(ok(cluster, "stats", "--json"))["tasks_stored"] == len(cluster.ids)

    assert ok(cluster, "seen-tasks").split() == TASK_NAMES


def test_the_url_comes_from_the_environment(cluster: Cluster):
    result = cli("seen-tasks", "--json", env={"CLEARLY_EXPORTER_URL": cluster.url})
    assert result.exit_code == 0 and "demo.add" in json.loads(result.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "--url", "http://127.0.0.1:{free}"], "cannot reach the exporter at"),
        (
            ["stats", "--url", "{url}/metrics"],
            "no clearly-exporter API at {url}/metrics (HTTP 404 on /api/stats); check --url, "
            "without a path unless a proxy adds one: {url}\n",
        ),
        (
            ["stats", "--url", "{url}/api"],
            "no clearly-exporter API at {url}/api (HTTP 404 on /api/stats); check --url, "
            "without a path unless a proxy adds one: {url}\n",
        ),
        (
            ["stats", "--url", "{tls}"],
            "the exporter at {tls} does not speak TLS (no --web-config with TLS); use {url}\n",
        ),
        (["stats", "--url", "localhost:9808"], "--url 'localhost:9808' is not an http(s) URL"),
        (["tasks", "(", "--url", "{url}"], "invalid regex '(': missing )"),
        (["capture", "--tasks", "*", "--url", "{url}"], "invalid regex '*'"),
        (["task", "nope", "--url", "{url}"], "unknown task 'nope' (never seen"),
        (["tasks", "--state", "FAILED", "--url", "{url}"], "unknown state 'FAILED'; use one of"),
    ],
)
def test_errors_are_one_line_and_debug_shows_the_traceback(cluster: Cluster, args, message):
    fill = {"url": cluster.url, "free": free_port(), "tls": cluster.url.replace("http", "https")}
    args = [arg.format(**fill) for arg in args]
    result = cli(*args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: " + message.format(**fill))
    assert result.output.count("\n") == 1
    debug = cli(*args, "--debug")
    assert debug.exit_code == 1 and isinstance(debug.exception, ClientError)


class Capture:
    """``clearly-exporter capture`` as a child process, its output read as it comes."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "clearly_exporter", "capture", *args]
        self.popen = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, text=True)
        self.output = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output += line

    def interrupt(self) -> int:
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(15)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def test_capture_shows_transitions_live_until_ctrl_c(cluster: Cluster, cleanup):
    capture = Capture("--url", cluster.url, "--tasks", cluster.queue, "--params", "--success")
    cleanup.append(capture)
    json_capture = Capture("--url", cluster.url, "--workers", cluster.worker.name, "--json")
    cleanup.append(json_capture)
    wait_for(
        lambda: api_get(cluster.url, "/api/stats")[1]["stream_clients"] == 2, 30, "both connected"
    )
    added = cluster.send("demo.add", 200, 1)
    failed = cluster.send("demo.fail", "live boom")
    big = cluster.send("demo.big", BIG_ARG)

    def squashed() -> str:  # long values wrap at the console's width
        return "".join(capture.output.split())

    wait_for(lambda: "live boom" in capture.output and "result 201" in capture.output, 60, "both")
    # Shown whole, as clearly shows results: the exporter's task view completes them.
    wait_for(lambda: "#" * 100 in squashed(), 60, "demo.big's whole result")
    wait_for(lambda: '"type": "worker"' in json_capture.output, 30, "a worker heartbeat")
    assert capture.interrupt() == 0
    assert json_capture.interrupt() == 0

    lines = capture.output.splitlines()
    states = [line.split()[1] for line in lines if added in line]
    # A task-sent seen after the task-received is late: not shown, never a step back.
    life = ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]
    assert states in (life, life[1:])
    fail_block = capture.output[capture.output.index(f"FAILURE   demo.fail {failed}") :]
    assert "error  ValueError('live boom')" in fail_block and "Traceback" in fail_block
    assert "ONLINE" not in capture.output, "--tasks alone shows no workers"
    assert f"SUCCESS   demo.big {big}" in capture.output
    assert repr((BIG_ARG,)) in squashed(), "its args whole too (result_extended)"
    worker = json.loads(json_capture.output.splitlines()[0])
    assert (worker["type"], worker["hostname"]) == ("worker", cluster.worker.name)
    assert worker["event"] in ("online", "heartbeat")
    assert '"type": "task"' not in json_capture.output, "--workers alone shows no tasks"


def test_reset_verb(tmp_path: Path, cleanup):
    broker = private_redis()
    exporter = Exporter(broker, tmp_path)
    cleanup.append(exporter.start())
    now = time.time()

    def stored() -> bool:
        publish(broker, [[received("done", now), started("done", now), succeeded("done", now)]])
        publish(broker, [[received("running", now), started("running", now)]])
        return api_get(exporter.url, "/api/stats")[1]["tasks_stored"] == 2

    wait_for(stored, 30, "two tasks stored", every=0.5)
    result = cli("reset", "--url", exporter.url)
    assert (result.exit_code, result.output) == (0, "forgot 1 finished tasks; 1 in flight kept\n")
    result = cli("reset", "--url", exporter.url, "--json")
    assert json.loads(result.output) == {"forgotten": 0, "kept": 1}

"""The demo runner: what it starts, how it stops, and what it says when a part dies."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from clearly_exporter.demo import runner
from clearly_exporter.demo.app import make_app
from clearly_exporter.demo.runner import Child, Step, browse_url, exited, plan, run_demo
from clearly_exporter.demo.signals import StopRequest
from tests.support import Proc, child_env, wait_for

#: A part that runs until a signal ends it.
IDLE = "import signal\nwhile True: signal.pause()"
#: A part that ignores SIGTERM, then sends signal ``argv[1]`` to the runner.
STUBBORN = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "os.kill(os.getppid(), int(sys.argv[1]))\n"
    "while True: signal.pause()"
)

SIGNALS = [signal.SIGINT, signal.SIGTERM]
SIGNAL_IDS = [signum.name for signum in SIGNALS]


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen]]:
    """Every process the runner starts, to check how each one ended."""
    processes: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            processes.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def use_plan(monkeypatch: pytest.MonkeyPatch, steps: list[Step]) -> None:
    monkeypatch.setattr(runner, "plan", lambda *args: steps)


def announced_folder(out: str) -> Path:
    """The temporary broker folder from the runner's ``broker:`` line."""
    line = next(line for line in out.splitlines() if line.startswith("broker:"))
    return Path(line.split("filesystem://", 1)[1])


@pytest.mark.parametrize(
    ("broker", "role", "workers", "error"),
    [
        ("filesystem:///x", "bogus", 2, click.BadParameter),
        (None, "worker", 2, click.UsageError),
        (None, "producer", 2, click.UsageError),
        (None, None, 0, click.BadParameter),
    ],
)
def test_bad_arguments_are_usage_errors(
    broker: str | None, role: str | None, workers: int, error: type[click.ClickException]
):
    with pytest.raises(error):
        run_demo(broker, role, "127.0.0.1", 9808, workers=workers)


def test_everything_starts_exporter_first_and_stops_it_last():
    steps = plan(None, "filesystem:///b", "0.0.0.0", 9808, 3, ["--max-tasks", "10"])
    assert [step.name for step in steps] == [
        "exporter",
        "worker demo1",
        "worker demo2",
        "worker demo3",
        "producer",
    ]
    exporter, *workers, producer = steps
    assert exporter.command[1:] == [
        "-m", "clearly_exporter", "run", "--broker", "filesystem:///b",
        "--host", "0.0.0.0", "--port", "9808", "--max-tasks", "10",
    ]  # fmt: skip
    assert exporter.ready_url == "http://127.0.0.1:9808/healthz"
    assert producer.stage < workers[0].stage < exporter.stage
    assert workers[1].command[workers[1].command.index("-n") + 1] == "demo2@%h"


def test_the_demo_exporter_completes_values_from_the_workers_backend(
    monkeypatch: pytest.MonkeyPatch,
):
    planned = {}

    def plan(role, broker, host, port, workers, exporter_args):
        planned.update(broker=broker, exporter_args=exporter_args)
        return []

    monkeypatch.setattr(runner, "plan", plan)
    monkeypatch.setattr(runner, "supervise", lambda *args: 0)
    monkeypatch.delenv("CLEARLY_DEMO_BACKEND", raising=False)
    assert run_demo(None, None, "127.0.0.1", 0, exporter_args=["--max-tasks", "9"]) == 0
    folder = planned["broker"].removeprefix("filesystem://")
    assert planned["exporter_args"] == ["--backend", f"file://{folder}/results", "--max-tasks", "9"]


def test_roles_start_one_part():
    assert [s.name for s in plan("worker", "filesystem:///b", "h", 1, 4, [])] == ["worker demo1"]
    assert [s.name for s in plan("producer", "filesystem:///b", "h", 1, 4, [])] == ["producer"]


def test_only_the_demos_own_workers_may_die_without_ending_it():
    """Killing one is how an operator watches the exporter see a worker go down."""
    vital = {s.name: s.vital for s in plan(None, "filesystem:///b", "h", 1, 2, [])}
    assert vital == {
        "exporter": True,
        "worker demo1": False,
        "worker demo2": False,
        "producer": True,
    }
    assert plan("worker", "filesystem:///b", "h", 1, 2, [])[0].vital


def ended(code: str, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        process = subprocess.Popen(python(code), stdout=out, stderr=out)
    process.wait()
    return process


class StopOnceReported(StopRequest):
    """Asked for once the runner has had one look at the part that died, ``dying``."""

    def __init__(self, processes: list[subprocess.Popen], dying: int) -> None:
        super().__init__()
        self.processes, self.dying, self.seen = processes, dying, False

    @property
    def requested(self) -> bool:
        if self.seen:
            return True
        ended = len(self.processes) > self.dying and self.processes[self.dying].poll() is not None
        self.seen = ended  # False once more: the runner looks, then stops
        return False


def test_a_worker_that_ends_lets_the_demo_go_on_but_the_stop_says_so(
    tmp_path: Path, started: list[subprocess.Popen], capsys: pytest.CaptureFixture[str]
):
    steps = [
        Step("idler", runner.EXPORTER, python(IDLE)),
        Step("worker demo2", runner.WORKERS, python("raise SystemExit(3)"), vital=False),
    ]
    code = runner.supervise(steps, {}, StopOnceReported(started, 1), str(tmp_path))
    assert code == 1, "its logs are then kept"
    err = capsys.readouterr().err
    assert "worker demo2 exited with code 3, unexpectedly" in err and "the rest goes on" in err
    assert started[0].returncode == -signal.SIGTERM, "the idler ran until the stop"


def test_a_part_that_ends_is_told_once_with_its_last_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    log = tmp_path / "worker.log"
    process = ended("import sys; print('starting'); sys.exit('cannot reach the broker')", log)
    worker = Child(Step("worker demo2", runner.WORKERS, [], vital=False), process, str(log))
    assert not exited([worker])
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "worker demo2 exited with code 1, unexpectedly",
        "  its last words: cannot reach the broker",
        f"  its log: {log}",
        "  the rest goes on: its end shows on /metrics (celery_worker_up)",
    ]
    assert not exited([worker]) and capsys.readouterr().err == "", "told once"
    exporter = Child(Step("exporter", runner.EXPORTER, []), ended("pass", tmp_path / "e.log"))
    assert exited([worker, exporter])
    assert capsys.readouterr().err == "exporter exited with code 0, unexpectedly\n"
    kill = "import os, signal; print('busy with a task'); os.kill(os.getpid(), signal.SIGKILL)"
    log = tmp_path / "killed.log"
    step = Step("worker demo1", runner.WORKERS, [], vital=False)
    killed = Child(step, ended(kill, log), str(log))
    assert not exited([killed])
    assert "last words" not in capsys.readouterr().err, "killed: its last line is no reason"


def test_an_exporter_on_port_zero_is_not_waited_for():
    assert plan(None, "filesystem:///b", "127.0.0.1", 0, 1, [])[0].ready_url is None


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:9808/metrics"),
        ("::", "http://[::1]:9808/metrics"),
        ("::1", "http://[::1]:9808/metrics"),
        ("example.org", "http://example.org:9808/metrics"),
    ],
)
def test_browse_url(host: str, url: str):
    assert browse_url(host, 9808, "/metrics") == url


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("raise SystemExit(3)", "crasher exited with code 3, unexpectedly"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "crasher killed by SIGKILL"),
    ],
    ids=["exit", "killed"],
)
def test_a_part_that_dies_stops_the_others(
    monkeypatch: pytest.MonkeyPatch,
    started: list[subprocess.Popen],
    capsys: pytest.CaptureFixture[str],
    code: str,
    said: str,
):
    use_plan(
        monkeypatch,
        [
            Step("idler", runner.WORKERS, python(IDLE)),
            Step("crasher", runner.PRODUCER, python(code)),
        ],
    )
    assert run_demo(None, None, "127.0.0.1", 9808) == 1
    out, err = capsys.readouterr()
    assert said in err
    assert started[0].returncode == -signal.SIGTERM
    assert not announced_folder(out).exists()
    logs = Path(err.rsplit("the parts' logs are kept in ", 1)[1].strip())
    assert (logs / "crasher.log").exists(), "kept: they say why"
    shutil.rmtree(logs)


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_a_signal_stops_everything_and_kills_stragglers(
    monkeypatch: pytest.MonkeyPatch,
    started: list[subprocess.Popen],
    capsys: pytest.CaptureFixture[str],
    signum: int,
):
    monkeypatch.setattr(runner, "STOP_DEADLINE", 0.5)
    use_plan(
        monkeypatch,
        [
            Step("idler", runner.PRODUCER, python(IDLE)),
            Step("stubborn", runner.EXPORTER, python(STUBBORN, str(int(signum)))),
        ],
    )
    assert run_demo(None, None, "127.0.0.1", 9808) == 0
    out, err = capsys.readouterr()
    assert "stubborn did not stop in 0.5s; killing it" in err
    assert [process.returncode for process in started] == [-signal.SIGTERM, -signal.SIGKILL]
    assert "Ctrl-C stops everything." in out
    assert not announced_folder(out).exists()
    logs = next(line for line in out.splitlines() if line.startswith("logs:")).split()[1]
    assert not Path(logs).exists(), "a clean stop leaves no logs behind"


def demo_process(broker: str, role: str, tmp_path: Path, **env: str) -> Proc:
    """``run_demo`` for one role in a process of its own, so it can be signalled."""
    code = (
        "import sys\n"
        "from clearly_exporter.demo.runner import run_demo\n"
        f"sys.exit(run_demo({broker!r}, {role!r}, '127.0.0.1', 9808))"
    )
    return Proc(python(code), child_env(**env), tmp_path / f"{role}.log").start()


def task_names(data: Path) -> set[str]:
    """The names of the tasks waiting in a filesystem broker's folder."""
    names = set()
    for path in data.glob("*.celery.msg"):
        names.add(json.loads(path.read_text())["headers"]["task"])
    return names


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_producer_role_sends_mixed_traffic_until_signalled(tmp_path: Path, signum: int):
    broker = f"filesystem://{tmp_path}"
    demo = demo_process(broker, "producer", tmp_path, CLEARLY_DEMO_RATE="50")
    try:
        wait_for(lambda: len(task_names(tmp_path / "data")) >= 4, 30, "four kinds of task")
    finally:
        code = demo.stop(signum)
    output = demo.output()
    assert code == 0, output
    assert "Traceback" not in output
    assert f"broker:   {broker}" in output


def test_worker_role_runs_tasks_until_signalled(tmp_path: Path):
    broker = f"filesystem://{tmp_path}"
    demo = demo_process(broker, "worker", tmp_path)
    client = make_app(broker, None)
    try:
        wait_for(lambda: client.control.ping(timeout=0.5, limit=1), 30, "the worker to answer")
        assert client.send_task("demo.add", (1, 2)).get(timeout=30) == 3
    finally:
        client.close()
        code = demo.stop(signal.SIGTERM)
    output = demo.output()
    assert code == 0, output
    assert "Traceback" not in output

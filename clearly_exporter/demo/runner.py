"""``clearly-exporter demo``: start workers, a producer and the exporter, and stop them in order.

Every part is a subprocess in its own session, so Ctrl-C reaches only the runner, which
then stops the producer first (no new work), the workers next (a warm shutdown finishes
what they hold, and their last events still reach the exporter) and the exporter last.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass

import click

from clearly_exporter.brokers import redact_url
from clearly_exporter.demo.backend import default_backend
from clearly_exporter.demo.signals import StopRequest, stop_on_signals

ROLES = ("worker", "producer")
#: Stop stages, in the order they are stopped.
PRODUCER, WORKERS, EXPORTER = 0, 1, 2
#: How long each part gets to stop after SIGTERM before it is killed.
STOP_DEADLINE = 10.0
#: How long the exporter gets to start consuming before the rest starts regardless.
READY_DEADLINE = 30.0
#: How often the runner checks on its parts.
POLL_INTERVAL = 0.2
#: Bind-everything addresses, and the loopback address to browse them by.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}


@dataclass(frozen=True)
class Step:
    """One part of the demo: its name for messages, its stop stage, how to start it.

    ``ready_url`` is polled after starting the part, until it answers 200, before the
    next part starts.
    """

    name: str
    stage: int
    command: list[str]
    ready_url: str | None = None
    #: Whether the demo ends when this part does; a demo worker that dies (killed, to
    #: watch the exporter see it go down) is reported and the rest goes on.
    vital: bool = True


@dataclass
class Child:
    """A started part, its process, its log file, and whether its end was reported."""

    step: Step
    process: subprocess.Popen
    log: str | None = None
    reported: bool = False


def browse_url(host: str, port: int, path: str) -> str:
    """An address a browser on this machine can open, even when the server binds all."""
    host = WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def worker_command(index: int) -> list[str]:
    """A demo worker with task events on, named so several can share one host."""
    return [
        sys.executable, "-m", "celery", "-A", "clearly_exporter.demo.app", "worker",
        "-E", "-n", f"demo{index}@%h", "--pool", "threads", "-c", "4", "-l", "warning",
    ]  # fmt: skip


def producer_command() -> list[str]:
    """The traffic producer."""
    return [sys.executable, "-m", "clearly_exporter.demo.producer"]


def exporter_command(broker: str, host: str, port: int, exporter_args: list[str]) -> list[str]:
    """The exporter itself, watching the same broker."""
    return [
        sys.executable, "-m", "clearly_exporter", "run", "--broker", broker,
        "--host", host, "--port", str(port), *exporter_args,
    ]  # fmt: skip


def plan(
    role: str | None, broker: str, host: str, port: int, workers: int, exporter_args: list[str]
) -> list[Step]:
    """The parts ``role`` runs, in start order.

    The exporter starts first and is waited for, so it is consuming before the workers'
    ``worker-online`` and the first ``task-sent`` events; with port 0 its address is
    unknown and it is not waited for.
    """
    if role == "worker":
        return [Step("worker demo1", WORKERS, worker_command(1))]
    if role == "producer":
        return [Step("producer", PRODUCER, producer_command())]
    ready = browse_url(host, port, "/healthz") if port else None
    return [
        Step("exporter", EXPORTER, exporter_command(broker, host, port, exporter_args), ready),
        *(
            Step(f"worker demo{i}", WORKERS, worker_command(i), vital=False)
            for i in range(1, workers + 1)
        ),
        Step("producer", PRODUCER, producer_command()),
    ]


def stop_all(children: list[Child]) -> None:
    """Stop the children stage by stage: SIGTERM, wait up to ``STOP_DEADLINE``, then SIGKILL.

    SIGTERM goes to the main process only: for a Celery worker that is a warm shutdown,
    and the worker stops its own pool. SIGKILL goes to the child's whole session.
    """
    for stage in sorted({child.step.stage for child in children}):
        group = [child for child in children if child.step.stage == stage]
        for child in group:
            if child.process.poll() is None:
                child.process.terminate()
        for child in group:
            try:
                child.process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                name = child.step.name
                click.echo(f"{name} did not stop in {STOP_DEADLINE:g}s; killing it", err=True)
                with suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()


def exited(children: list[Child]) -> bool:
    """Whether a vital part has exited; each part that exits is reported once, with the
    last line of its log when it exited by itself. Parts are meant to run until stopped."""
    for child in children:
        code = child.process.poll()
        if code is None or child.reported:
            continue
        child.reported = True
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        # Killed, its last line is whatever it was doing, not why it ended.
        said = last_line(child.log) if child.log and code > 0 else None
        click.echo(f"{child.step.name} {how}, unexpectedly", err=True)
        if said:
            click.echo(f"  its last words: {said}", err=True)
        if child.log:
            click.echo(f"  its log: {child.log}", err=True)
        if child.step.vital:
            return True
        click.echo("  the rest goes on: its end shows on /metrics (celery_worker_up)", err=True)
    return False


def last_line(path: str) -> str | None:
    """The last line a part wrote to its log (where the reason it stopped usually is)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 4096, 0))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1].strip() if lines else None


def pause(children: list[Child]) -> None:
    """Wait one poll interval, or less if the newest part exits meanwhile."""
    with suppress(subprocess.TimeoutExpired):
        children[-1].process.wait(timeout=POLL_INTERVAL)


def healthy(url: str) -> bool:
    """Whether ``url`` answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def await_ready(url: str, children: list[Child], stop: StopRequest) -> bool:
    """Wait for ``url`` to answer 200; False if stopped or a child died meanwhile.

    A part that is slow to get ready (a broker still starting) is reported, not fatal.
    """
    deadline = time.monotonic() + READY_DEADLINE
    while not healthy(url):
        if stop.requested or exited(children):
            return False
        if time.monotonic() > deadline:
            click.echo(f"{url} not ready after {READY_DEADLINE:g}s; going on", err=True)
            return True
        pause(children)
    return True


def supervise(
    steps: list[Step], env: dict[str, str], stop: StopRequest, logs: str | None = None
) -> int:
    """Start the parts and watch them until ``stop`` (0; 1 if a part that may end, a
    worker, ended meanwhile) or a vital one exits by itself (1).

    Each part gets a session of its own, so a terminal's Ctrl-C reaches only the runner.
    With ``logs``, each part writes its output to a file there, not to the terminal.
    """
    children: list[Child] = []
    try:
        for step in steps:
            output = path = None
            if logs is not None:
                path = os.path.join(logs, step.name.replace(" ", "-") + ".log")
                output = open(path, "ab")  # noqa: SIM115 - handed to the child, closed below
            process = subprocess.Popen(
                step.command, env=env, start_new_session=True, stdout=output, stderr=output
            )
            if output is not None:
                output.close()
            children.append(Child(step, process, path))
            if step.ready_url and not await_ready(step.ready_url, children, stop):
                return 0 if stop.requested else 1
        while not stop.requested:
            if exited(children):
                return 1
            pause(children)
        click.echo("Stopping; workers first finish the tasks they hold.")
        return 1 if any(child.reported for child in children) else 0
    finally:
        stop_all(children)


def announce(role: str | None, broker: str, host: str, port: int, logs: str | None) -> None:
    """Tell the user where to look."""
    if role is None and port:
        click.echo(f"metrics:  {browse_url(host, port, '/metrics')}")
        click.echo(f"health:   {browse_url(host, port, '/healthz')}")
    click.echo(f"broker:   {redact_url(broker)}")
    if logs is not None:
        click.echo(f"logs:     {logs} (removed at a clean stop)")
    click.echo("Ctrl-C stops everything.")


def run_demo(
    broker: str | None,
    role: str | None,
    host: str,
    port: int,
    workers: int = 2,
    exporter_args: list[str] | None = None,
) -> int:
    """Run the demo (or one ``role`` of it) until Ctrl-C or SIGTERM; return the exit code.

    Without a broker everything shares a fresh temporary ``filesystem://`` folder, which
    only works when this runner starts every part, so a ``role`` needs a broker.
    """
    if role is not None and role not in ROLES:
        raise click.BadParameter(f"{role!r} is not one of {', '.join(ROLES)}", param_hint="role")
    if role is not None and broker is None:
        raise click.UsageError(f"the {role} role needs --broker, shared with the other parts")
    if workers < 1:
        raise click.BadParameter(f"{workers} is below 1", param_hint="workers")
    folder = tempfile.mkdtemp(prefix="clearly-demo-") if broker is None else None
    broker = broker or f"filesystem://{folder}"
    env = {**os.environ, "CLEARLY_DEMO_BROKER": broker}
    stop = StopRequest()
    # With every part in one terminal, Celery's own logs (a traceback per failing demo
    # task) would bury the addresses above: they go to files instead.
    logs = tempfile.mkdtemp(prefix="clearly-demo-logs-") if role is None else None
    # The exporter completes values Celery cut from the workers' result backend.
    backend = env.get("CLEARLY_DEMO_BACKEND") or default_backend(broker)
    exporter_args = [*(["--backend", backend] if backend else []), *(exporter_args or [])]
    code = 1
    try:
        steps = plan(role, broker, host, port, workers, exporter_args)
        with stop_on_signals(stop):
            announce(role, broker, host, port, logs)
            code = supervise(steps, env, stop, logs)
        return code
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if logs is not None and code == 0:
            shutil.rmtree(logs, ignore_errors=True)
        elif logs is not None:
            click.echo(f"the parts' logs are kept in {logs}", err=True)

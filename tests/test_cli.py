"""User errors on the command line: one line, exit status 2, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from clearly_exporter.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--broker", "foo://x"], "unknown broker scheme 'foo'"),
        (["run", "--broker", "localhost:6379"], "has no scheme"),
        (["run"], "Missing option '--broker'"),
        (["run", "--broker", "redis://x", "--broker-transport-option", "nokey"], "not key=value"),
        (["run", "--broker", "redis://x", "--worker-timeout", "soon"], "not a duration"),
        (["run", "--broker", "redis://x", "--port", "70000"], "0<=x<=65535"),
        (["run", "--broker", "redis://x", "--log-format", "xml"], "'text', 'json'"),
        (
            ["run", "--broker", "redis://x", "--otlp-endpoint", "http://[::1"],
            "--otlp-endpoint 'http://[::1' cannot be used: Invalid IPv6 URL",
        ),
    ],
)
def test_bad_options_are_one_line_errors(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_options_read_their_environment_variables():
    result = CliRunner().invoke(main, ["run"], env={"CLEARLY_EXPORTER_BROKER": "nope://x"})
    assert result.exit_code == 2
    assert "CLEARLY_EXPORTER_BROKER" in result.output


def test_help_names_every_option_of_the_issue():
    result = CliRunner().invoke(main, ["run", "--help"])
    for flag in [
        "--broker",
        "--host",
        "--port",
        "--queue",
        "--default-queue",
        "--max-tasks",
        "--max-workers",
        "--max-task-names",
        "--worker-timeout",
        "--worker-purge",
        "--broker-transport-option",
        "--broker-use-ssl",
        "--enable-events",
        "--log-level",
        "--log-format",
        "--name-wait",
    ]:
        assert flag in result.output
        assert "CLEARLY_EXPORTER_" + flag[2:].replace("-", "_").upper() in result.output


@pytest.mark.parametrize(
    "command", [["run", "--broker", "redis://127.0.0.1:1"], ["demo"]], ids=["run", "demo"]
)
def test_port_in_use_is_a_one_line_error(command):
    """The demo says so before it starts anything, not once its exporter has died."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "clearly_exporter", *command]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: cannot serve on 127.0.0.1:{port} (Address already in use); "
        "choose another --host/--port\n"
    )
    assert result.stdout == "", "nothing started, nothing announced"

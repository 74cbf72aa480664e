"""Brokers of a test's own, which it may stop, hang or restart.

The machine's shared Redis and RabbitMQ serve every other test (and other people):
fault tests never touch them. Each server here listens on free ports, keeps its data
under the test's ``tmp_path`` and is stopped by the ``cleanup`` fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.support import Proc, child_env, free_port, reachable, wait_for

#: The real server script: Debian's ``/usr/sbin`` wrapper switches to the ``rabbitmq``
#: user and writes its output under ``/var/log``, which a private node must not do.
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class PrivateRedis:
    """A redis-server on a fixed port across restarts, with ``extra`` config arguments."""

    def __init__(self, tmp: Path, extra: list[str] | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server not installed")
        self.port = free_port()
        self.tmp = tmp
        self.extra = extra or []
        self.proc: Proc | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.tmp), *self.extra]
        self.proc = Proc(cmd, child_env(), self.tmp / f"redis-{self.port}.log").start()
        wait_for(lambda: reachable("127.0.0.1", self.port), 20, "private redis up")
        return self

    def pause(self) -> None:
        """Hang it: connections are still accepted (by the kernel), nothing is answered."""
        assert self.proc is not None and self.proc.popen is not None
        os.kill(self.proc.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None and self.proc.popen is not None
        os.kill(self.proc.popen.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.popen is not None:
            if self.proc.popen.poll() is None:
                self.resume()  # a stopped process would sit on SIGTERM until the kill
            self.proc.stop()


class PrivateRabbit:
    """A RabbitMQ node of its own: own node name, ports, database, logs and cookie.

    It registers with the host's epmd like any node (a distinct name, so the shared
    node is unaffected). Start takes about 4-5 s here; SIGTERM stops it cleanly in ~1 s.
    """

    def __init__(self, tmp: Path) -> None:
        if not RABBITMQ_SERVER.exists():
            pytest.skip(f"{RABBITMQ_SERVER} not installed")
        self.port = free_port()
        self.node = f"t{self.port}@localhost"
        self.home = tmp / f"rabbit-{self.port}"
        self.home.mkdir()
        config = self.home / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        plugins = self.home / "enabled_plugins"
        plugins.write_text("[].\n")
        self.env = child_env(
            HOME=str(self.home),  # where the node's Erlang cookie goes
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(self.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.home / "log"),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_PID_FILE=str(self.home / "pid"),
        )
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> PrivateRabbit:
        self.starts += 1
        log = self.home / f"server-{self.starts}.log"
        self.proc = Proc([str(RABBITMQ_SERVER)], self.env, log).start()
        wait_for(lambda: reachable("127.0.0.1", self.port), 60, "private rabbitmq up")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

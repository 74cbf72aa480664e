"""The benchmark's processes: consumers, the OTLP sink and py-spy, watched through /proc.

Everything here is Linux-only on purpose: CPU time comes from ``schedstat`` (ns) and
memory from ``/proc/<pid>/status``, so the runner can measure a consumer without
asking it anything while it works.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

import redis

BENCH = Path(__file__).resolve().parent
PR_SET_PDEATHSIG = 1
#: A consumer is idle once it used under IDLE_SHARE of a CPU over the last QUIET seconds.
QUIET = 0.3
IDLE_SHARE = 0.05
#: Samples where the consumer used at least this share of a CPU count as working.
BUSY_SHARE = 0.5
METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
LIMIT_KEY = "client-output-buffer-limit"

Sample = tuple[str, dict[str, str], float]


class BenchError(RuntimeError):
    """A run that cannot go on; said in one line."""


def _die_with_parent() -> None:
    """In the child: be killed if the runner dies, so no consumer outlives it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something true (returned), or fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return result


def _schedstat_works() -> bool:
    """schedstat counts CPU time in ns; some kernels leave it out or at zero."""
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[0]) > 0
    except (OSError, ValueError, IndexError):
        return False


SCHEDSTAT = _schedstat_works()
TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """CPU time the process's threads have used, in ns (schedstat; else tick-grained)."""
    if not SCHEDSTAT:
        return process_ns(pid)
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def children(pid: int) -> list[int]:
    """The process's child processes (the exporter's span process), if any."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def tree_cpu_ns(pid: int) -> int:
    """CPU time of a process and its children: the exporter's work includes its span
    process's."""
    total = cpu_ns(pid)
    for child in children(pid):
        try:
            total += cpu_ns(child)
        except OSError:
            continue  # it just ended
    return total


def tree_memory_kb(pid: int, key: str) -> int:
    """``memory_kb`` of a process plus that of its children."""
    return memory_kb(pid, key) + sum(memory_kb(child, key) for child in children(pid))


def process_ns(pid: int) -> int:
    """utime + stime of a process, in ns; 0 if it cannot be read (e.g. a remote Redis)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int((int(fields[11]) + int(fields[12])) * TICK_NS)


def machine_busy_ns() -> int:
    """CPU time all cores spent not idle (user, nice, system, irq, softirq), in ns."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return int((user + nice + system + irq + softirq) * TICK_NS)


def memory_kb(pid: int, key: str) -> int:
    """A ``Vm*`` line of /proc/<pid>/status, in kB (VmHWM is the peak RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} for pid {pid}")


def all_stopped(pid: int) -> bool:
    """True once every thread of the process is in the stopped state."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state not in ("T", "t"):
            return False
    return True


def redis_local_ports(pid: int, redis_port: int) -> set[int]:
    """Local ports of the process's TCP connections to Redis, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] in inodes and int(cols[2].rsplit(":", 1)[1], 16) == redis_port:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def free_port() -> int:
    """A port free now, for the exporter (it does not say which port it bound to 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        match = METRIC.match(line)
        if match and not line.startswith("#"):
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def total(samples: list[Sample], metric: str, /, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels``."""
    return sum(
        v
        for n, lab, v in samples
        if n == metric and all(lab.get(k) == want for k, want in labels.items())
    )


class Child:
    """A subprocess of the runner: killed with it, its stderr in a log file.

    With ``lines``, it speaks the line protocol of bench/bare_receiver.py: one line on
    stdout when ready, then one answer line for every line it reads on stdin.
    """

    name = "child"

    def __init__(self, argv: list[str], log: Path, lines: bool = False, **popen: Any) -> None:
        self.log = log
        self._log_file = log.open("wb")
        if lines:
            popen.update(stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.proc = subprocess.Popen(
            argv,
            stderr=self._log_file,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **popen,
        )
        self.pid = self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def line(self, timeout: float = 30) -> str:
        """The child's next stdout line."""
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            self.check_alive()
            raise BenchError(f"{self.name} did not answer within {timeout:.0f} s")
        text = stdout.readline().decode().strip()
        if not text:
            self.check_alive()
        return text

    def ask(self) -> str:
        """One question on stdin, its answer."""
        self.proc.stdin.write(b"\n")  # type: ignore[union-attr]
        return self.line()

    def stop(self) -> None:
        """Terminate (thawing it so it can), then kill if it will not go."""
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGCONT):
                os.kill(self.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


class Consumer(Child):
    """A consumer of the broker's event exchange."""

    name = "consumer"

    def ready(self) -> bool:
        raise NotImplementedError

    def count(self) -> int:
        """Events consumed so far."""
        raise NotImplementedError

    def settled(self) -> bool:
        """Whether the work that follows the events (spans) is accounted for too."""
        return True

    def progress(self) -> tuple[float, ...]:
        """What moves while that work goes on, to tell a stall from slow progress."""
        return ()

    def finished_at(self) -> float | None:
        """When that work ended (``time.monotonic()``), if it ends after the events."""
        return None

    def helpers(self) -> tuple[int, ...]:
        """Processes working for this one (the OTLP sink): not counted as others' load."""
        return ()

    def subscription(self, r: redis.Redis, db: int) -> dict | None:
        """Redis's CLIENT LIST entry of this process's pattern-subscribed connection."""
        ports = redis_local_ports(self.pid, r.connection_pool.connection_kwargs["port"])
        for client in r.client_list(_type="pubsub"):
            port = int(client["addr"].rsplit(":", 1)[1])
            if port in ports and int(client["psub"]) > 0 and int(client["db"]) == db:
                return client
        return None


class BareReceiver(Consumer):
    """bench/bare_receiver.py: ``consuming`` when set up, its count per stdin line."""

    name = "bare EventReceiver"

    def __init__(self, broker: str, log: Path) -> None:
        argv = [sys.executable, str(BENCH / "bare_receiver.py"), "--broker", broker]
        super().__init__(argv, log, lines=True)
        self._said_consuming = False

    def ready(self) -> bool:
        if not self._said_consuming:
            self._said_consuming = self.line() == "consuming"
        return self._said_consuming

    def count(self) -> int:
        return int(self.ask())


class SinkState(NamedTuple):
    spans: int
    requests: int
    #: ``time.monotonic()`` of the last request, 0 before any.
    last: float


class OtlpSink(Child):
    """bench/otlp_sink.py: an OTLP/gRPC receiver that counts spans, in its own process."""

    name = "OTLP sink"

    def __init__(self, log: Path) -> None:
        super().__init__([sys.executable, str(BENCH / "otlp_sink.py")], log, lines=True)
        said = self.line()
        if not said.startswith("listening "):
            raise BenchError(f"the OTLP sink said {said!r}")
        self.endpoint = f"http://127.0.0.1:{int(said.split()[1])}"

    def state(self) -> SinkState:
        spans, requests, last = self.ask().split()
        return SinkState(int(spans), int(requests), float(last))


class Exporter(Consumer):
    """``clearly-exporter run``: ready when /healthz is 200, its count from /api/stats."""

    name = "clearly-exporter"

    def __init__(
        self,
        broker: str,
        max_tasks: int,
        extra: list[str],
        log: Path,
        port: int | None = None,
    ) -> None:
        port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "clearly_exporter",
            "run",
            "--broker",
            broker,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-tasks",
            str(max_tasks),
            "--log-level",
            "warning",
            *extra,
        ]
        super().__init__(argv, log, stdout=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 60) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
                return response.status, response.read()
        except HTTPError as exc:
            return exc.code, exc.read()

    def ready(self) -> bool:
        self.check_alive()
        try:
            return self.get("/healthz", timeout=5)[0] == 200
        except (URLError, ConnectionError, TimeoutError):
            return False

    def metrics(self) -> list[Sample]:
        status, body = self.get("/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def stats(self) -> dict[str, Any]:
        """``/api/stats``: cheap (no task scan), so it may be asked while the exporter works."""
        status, body = self.get("/api/stats")
        if status != 200:
            raise BenchError(f"/api/stats answered {status}")
        return json.loads(body)

    def count(self) -> int:
        return int(self.stats()["events_processed"])


class TracedExporter(Exporter):
    """The exporter exporting spans to an OTLP sink: done once every span is accounted for.

    A span is accounted for when the sink received it or the exporter counts it dropped.
    """

    name = "clearly-exporter, tracing"

    def __init__(
        self, broker: str, max_tasks: int, extra: list[str], log: Path, sink: OtlpSink, spans: int
    ) -> None:
        super().__init__(broker, max_tasks, [*extra, "--otlp-endpoint", sink.endpoint], log)
        self.sink = sink
        self.spans = spans
        self.last_sink = SinkState(0, 0, 0.0)

    def settled(self) -> bool:
        self.last_sink = self.sink.state()
        if self.last_sink.spans >= self.spans:
            return True
        samples = self.metrics()
        shipped = total(samples, "clearly_exporter_spans_exported_total")
        return shipped + total(samples, "clearly_exporter_spans_dropped_total") >= self.spans

    def progress(self) -> tuple[float, ...]:
        return (self.last_sink.spans,)

    def finished_at(self) -> float | None:
        return self.last_sink.last or None

    def helpers(self) -> tuple[int, ...]:
        return (self.sink.pid,)


class Reading(NamedTuple):
    """CPU times at one instant, in ns: the consumer's, and what else the machine did."""

    t: float
    cpu: int
    machine: int
    redis: int
    runner: int
    helpers: int


class CpuWatch:
    """Samples a process's CPU time: when it last worked, and whether it has gone idle.

    Each reading also takes the machine's busy time, Redis's and the runner's, so a
    measurement can say how much CPU something else took meanwhile (the machine is
    shared). Times are ``time.monotonic()``, comparable with other processes' on Linux.
    """

    def __init__(self, pid: int, redis_pid: int = 0, helpers: tuple[int, ...] = ()) -> None:
        self.pid = pid
        self.redis_pid = redis_pid
        self.helpers = helpers
        self.first = self.last = self.last_busy = self._read()
        self.window = deque([self.first])

    def _read(self) -> Reading:
        return Reading(
            time.monotonic(),
            tree_cpu_ns(self.pid),
            machine_busy_ns(),
            process_ns(self.redis_pid) if self.redis_pid else 0,
            time.process_time_ns(),
            sum(process_ns(pid) for pid in self.helpers),
        )

    def sample(self) -> None:
        reading, last = self._read(), self.last
        if (reading.cpu - last.cpu) / 1e9 >= BUSY_SHARE * (reading.t - last.t):
            self.last_busy = reading
        self.last = reading
        self.window.append(reading)
        while len(self.window) >= 2 and reading.t - self.window[1].t >= QUIET:
            self.window.popleft()

    def idle(self) -> bool:
        """Under IDLE_SHARE of a CPU used over the last QUIET seconds."""
        first, last = self.window[0], self.last
        elapsed = last.t - first.t
        return elapsed >= QUIET and (last.cpu - first.cpu) / 1e9 < IDLE_SHARE * elapsed

    def forget(self) -> None:
        """Start the idle window afresh (after a query that cost the process CPU)."""
        self.window = deque([self.last])


def others_cores(start: Reading, end: Reading) -> tuple[float, float]:
    """Cores Redis kept busy between two readings, and all processes but it, the
    watched one, its helpers and the runner."""
    seconds = end.t - start.t
    if seconds <= 0:
        return 0.0, 0.0
    others = (end.machine - start.machine) - sum(
        getattr(end, key) - getattr(start, key) for key in ("cpu", "redis", "runner", "helpers")
    )
    return (end.redis - start.redis) / 1e9 / seconds, max(others, 0) / 1e9 / seconds


def settle(child: Child, timeout: float = 30) -> None:
    """Wait until the process is idle, so what follows is not its startup work."""
    watch = CpuWatch(child.pid)

    def idle() -> bool:
        child.check_alive()
        watch.sample()
        return watch.idle()

    wait_for(f"{child.name} to be idle", idle, timeout)


def freeze(child: Child) -> None:
    """SIGSTOP, and wait until every thread has really stopped."""
    os.kill(child.pid, signal.SIGSTOP)
    wait_for(f"{child.name} to stop", lambda: all_stopped(child.pid), 10)


def subscribed(consumer: Consumer, r: redis.Redis, db: int) -> None:
    """Wait for the consumer's readiness, then for Redis to show its pattern subscription.

    kombu subscribes on its first drain, after the consumer may already say it is ready.
    """
    wait_for(f"{consumer.name} to be ready", consumer.ready, 60)
    wait_for(f"{consumer.name}'s subscription", lambda: consumer.subscription(r, db), 30)


def redis_target(url: str) -> tuple[redis.Redis, int]:
    """A client on the broker's Redis, for CONFIG and CLIENT LIST, and the broker's db."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise BenchError("the benchmark needs a redis:// broker (it lifts pub/sub buffer limits)")
    db = int(parts.path.strip("/") or 0)
    client = redis.Redis(
        host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=db, password=parts.password
    )
    return client, db


@contextlib.contextmanager
def unlimited_pubsub(r: redis.Redis) -> Iterator[None]:
    """Let Redis keep whole backlogs for slow or frozen subscribers; restore after."""
    previous = r.config_get(LIMIT_KEY)[LIMIT_KEY]
    r.config_set(LIMIT_KEY, "pubsub 0 0 0")
    print(f"Redis {LIMIT_KEY} was {previous!r}; pubsub 0 0 0 until the end", flush=True)
    try:
        yield
    finally:
        r.config_set(LIMIT_KEY, previous)


class Profiler:
    """``py-spy record --gil`` on a process into a raw (collapsed) file.

    Only the thread holding the GIL is sampled: the exporter is bound by it, and a thread
    waiting (on a lock, a socket, a condition) is then never counted as working. By
    default py-spy stops the process for each sample, so a profiled drain is ~10% slower
    than an unprofiled one. ``nonblocking`` reads its memory while it runs instead, but
    on a busy interpreter a third of the samples or more then fail (py-spy's ``Errors``).
    """

    def __init__(self, pid: int, out: Path, rate: int = 100, nonblocking: bool = False) -> None:
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if spy is None:
            raise BenchError("--profile needs py-spy: pip install py-spy")
        self.out = out
        argv = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        argv += ["--gil", "--function", "--threads", "--output", str(out)]
        if nonblocking:
            argv.append("--nonblocking")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        # py-spy says "Sampling process ..." once it has attached.
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        ready, _, _ = select.select([stdout], [], [], 30)
        said = stdout.readline().decode() if ready else "nothing within 30 s"
        if "Sampling" not in said:
            self.proc.kill()
            raise BenchError(f"py-spy did not start: {said.strip()!r}")

    def stop(self) -> tuple[Path, str]:
        """Stop as Ctrl-C would (py-spy then writes its file); its last words, which count
        the samples it could not take (``Errors``)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            said, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            raise BenchError("py-spy did not write its profile within 30 s") from exc
        if not self.out.exists():
            raise BenchError(f"py-spy wrote no profile to {self.out}")
        counts = re.search(r"Samples: \d+ Errors: \d+", said.decode(errors="replace"))
        return self.out, counts.group(0) if counts else "py-spy gave no sample count"

"""Event-rate benchmark: the exporter against celery's bare ``EventReceiver``, one storm.

Both consumers are started and truly subscribed, then frozen (SIGSTOP); the storm is
published once, so Redis keeps a backlog of it for each (its pub/sub output buffer
limit is lifted for the run and restored after). Then each consumer in turn is thawed
(SIGCONT) with the machine to itself, and the time until it has accounted for every
event is taken. See bench/README.md for the method and the latest figures::

    python bench/run.py --tasks 100000 --names 200 --workers 20 \\
        --broker redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

import redis

# bench/ is on sys.path when this file runs as a script, as it is meant to.
from storm import Storm, build_storm, describe, publish, spec_arguments, spec_from

BENCH = Path(__file__).resolve().parent
PR_SET_PDEATHSIG = 1
#: How often the drain watcher samples the consumer's CPU time.
SAMPLE = 0.005
#: A consumer is idle once it used under IDLE_SHARE of a CPU over the last QUIET seconds.
QUIET = 0.3
IDLE_SHARE = 0.05
#: Samples where the consumer used at least this share of a CPU count as working.
BUSY_SHARE = 0.5
#: Least time between two count queries while a consumer looks idle but is not done.
QUERY_EVERY = 0.5
#: An idle consumer whose count has not moved for this long has stalled.
STALL = 5.0
#: Other processes' load, in cores, above which a drain is flagged as measured on a busy machine.
SHARED = 0.25
METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class BenchError(RuntimeError):
    """A run that cannot go on; said in one line."""


def _die_with_parent() -> None:
    """In the child: be killed if the runner dies, so no consumer outlives it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Poll ``check`` until true, or fail once ``timeout`` seconds have gone."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


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
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int((int(fields[11]) + int(fields[12])) * TICK_NS)
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


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


@dataclass
class Result:
    """One consumer's drain."""

    consumer: str
    events: int
    expected: int
    seconds: float
    cpu_seconds: float
    peak_rss_kb: int
    rss_before_kb: int
    complete: bool
    #: Cores Redis kept busy meanwhile (it feeds the backlog), and all other processes.
    redis_cores: float = 0.0
    other_cores: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Consumer:
    """A consumer subprocess: start, readiness, freezing, counting and its Redis link."""

    name = "consumer"

    def __init__(self, argv: list[str], log: Path, **popen: object) -> None:
        self.log = log
        self._log_file = log.open("wb")
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

    def ready(self) -> bool:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def subscription(self, r: redis.Redis, db: int) -> dict | None:
        """Redis's CLIENT LIST entry of this process's pattern-subscribed connection."""
        ports = redis_local_ports(self.pid, r.connection_pool.connection_kwargs["port"])
        for client in r.client_list(_type="pubsub"):
            port = int(client["addr"].rsplit(":", 1)[1])
            if port in ports and int(client["psub"]) > 0 and int(client["db"]) == db:
                return client
        return None

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


class BareReceiver(Consumer):
    """bench/bare_receiver.py: ``consuming`` when set up, its count per stdin line."""

    name = "bare EventReceiver"

    def __init__(self, broker: str, log: Path) -> None:
        argv = [sys.executable, str(BENCH / "bare_receiver.py"), "--broker", broker]
        super().__init__(argv, log, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._said_consuming = False

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.check_alive()
            raise BenchError(f"{self.name} did not answer within {timeout:.0f} s")
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            self.check_alive()
        return line

    def ready(self) -> bool:
        if not self._said_consuming:
            self._said_consuming = self._line(30) == "consuming"
        return self._said_consuming

    def count(self) -> int:
        self.proc.stdin.write(b"\n")
        return int(self._line(30))


class Exporter(Consumer):
    """``clearly-exporter run``: ready when /healthz is 200, its count from /metrics."""

    name = "clearly-exporter"

    def __init__(self, broker: str, port: int, max_tasks: int, extra: list[str], log: Path) -> None:
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

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = self.get("/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def count(self) -> int:
        return int(
            sum(v for name, _, v in self.metrics() if name == "clearly_exporter_events_total")
        )


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        match = METRIC.match(line)
        if match and not line.startswith("#"):
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def free_port() -> int:
    """A port free now, for the exporter (it does not say which port it bound to 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reading(NamedTuple):
    """CPU times at one instant, in ns: the consumer's, and what else the machine did."""

    t: float
    cpu: int
    machine: int
    redis: int
    runner: int


def machine_busy_ns() -> int:
    """CPU time all cores spent not idle (user, nice, system, irq, softirq), in ns."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return int((user + nice + system + irq + softirq) * TICK_NS)


def process_ns(pid: int) -> int:
    """utime + stime of a process, in ns; 0 if it cannot be read (e.g. a remote Redis)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int((int(fields[11]) + int(fields[12])) * TICK_NS)


class CpuWatch:
    """Samples a process's CPU time: when it last worked, and whether it has gone idle.

    Each reading also takes the machine's busy time, Redis's and the runner's, so a
    drain can say how much CPU something else took meanwhile (the machine is shared).
    """

    def __init__(self, pid: int, redis_pid: int = 0) -> None:
        self.pid = pid
        self.redis_pid = redis_pid
        self.first = self.last = self.last_busy = self._read()
        self.window = deque([self.first])

    def _read(self) -> Reading:
        return Reading(
            time.perf_counter(),
            cpu_ns(self.pid),
            machine_busy_ns(),
            process_ns(self.redis_pid) if self.redis_pid else 0,
            time.process_time_ns(),
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


def settle(consumer: Consumer, timeout: float = 30) -> None:
    """Wait until the consumer is idle, so freezing it leaves no startup work behind."""
    watch = CpuWatch(consumer.pid)

    def idle() -> bool:
        consumer.check_alive()
        watch.sample()
        return watch.idle()

    wait_for(f"{consumer.name} to be idle", idle, timeout)


def freeze(consumer: Consumer) -> None:
    """SIGSTOP, and wait until every thread has really stopped."""
    os.kill(consumer.pid, signal.SIGSTOP)
    wait_for(f"{consumer.name} to stop", lambda: all_stopped(consumer.pid), 10)


def drain(consumer: Consumer, expected: int, timeout: float, redis_pid: int) -> Result:
    """Thaw the consumer and time it until its count reaches ``expected``.

    The watcher never asks for the count while the consumer works (a scrape would steal
    its CPU): it samples the consumer's CPU time every few ms, asks only once it has been
    idle for a moment, and dates the end at the last sample where it was still working.
    """
    rss_before = memory_kb(consumer.pid, "VmRSS")
    watch = CpuWatch(consumer.pid, redis_pid)
    start = watch.first
    os.kill(consumer.pid, signal.SIGCONT)
    last_query = 0.0
    counted, moved = -1, start.t
    while True:
        time.sleep(SAMPLE)
        consumer.check_alive()
        watch.sample()
        now = watch.last.t
        if watch.idle() and now - last_query >= QUERY_EVERY:
            end, last_query = watch.last_busy, now
            n = consumer.count()
            watch.forget()
            if n >= expected or (n == counted and now - moved >= STALL):
                break
            if n != counted:
                counted, moved = n, now
        if now - start.t > timeout:
            raise BenchError(f"{consumer.name} did not finish within {timeout:.0f} s")
    seconds = end.t - start.t
    others = (end.machine - start.machine) - sum(
        getattr(end, key) - getattr(start, key) for key in ("cpu", "redis", "runner")
    )
    return Result(
        consumer.name,
        n,
        expected,
        seconds,
        (end.cpu - start.cpu) / 1e9,
        memory_kb(consumer.pid, "VmHWM"),
        rss_before,
        complete=n == expected,
        redis_cores=(end.redis - start.redis) / 1e9 / seconds if seconds > 0 else 0.0,
        other_cores=max(others, 0) / 1e9 / seconds if seconds > 0 else 0.0,
    )


@dataclass
class Scrapes:
    """/metrics timed after the drain."""

    seconds: list[float] = field(default_factory=list)
    bytes: int = 0
    series: int = 0
    collect_seconds: float = 0.0


def time_scrapes(exporter: Exporter, count: int) -> Scrapes:
    """GET /metrics ``count`` times in a row, as a Prometheus server would, and time each."""
    out = Scrapes()
    for _ in range(count):
        started = time.perf_counter()
        status, body = exporter.get("/metrics")
        out.seconds.append(time.perf_counter() - started)
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        out.bytes = len(body)
        samples = parse_metrics(body.decode())
        out.series = len(samples)
        out.collect_seconds = next(
            v for n, _, v in samples if n == "clearly_exporter_scrape_duration_seconds"
        )
    return out


def exporter_checks(exporter: Exporter, storm: Storm) -> list[str]:
    """What the exporter says it holds after the drain, against what the storm sent."""
    samples = exporter.metrics()

    def total(name: str, **labels: str) -> float:
        return sum(
            v
            for n, lab, v in samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    lines = []
    by_type = {lab["type"]: int(v) for n, lab, v in samples if n == "clearly_exporter_events_total"}
    wrong = {t: (by_type.get(t, 0), n) for t, n in storm.counts.items() if by_type.get(t, 0) != n}
    lines.append(
        "events by type match the storm"
        if not wrong
        else "events by type DIFFER (exporter, storm): " + repr(wrong)
    )
    queues: dict[str, set[str]] = {}
    for n, lab, _ in samples:
        if n == "celery_tasks_total" and "name" in lab:
            queues.setdefault(lab["name"], set()).add(lab.get("queue", ""))
    lines.append(
        f"tasks tracked {int(total('clearly_exporter_tasks_tracked'))} of {storm.spec.tasks}, "
        f"evicted {int(total('clearly_exporter_tasks_evicted_total'))}, "
        f"invalid events {int(total('clearly_exporter_events_invalid_total'))}, "
        f"late events {int(total('clearly_exporter_events_late_total'))}, "
        f"SUCCESS counted {int(total('celery_tasks_total', state='SUCCESS'))}, "
        f"task names on /metrics {len(queues)} "
        f"(under more than one queue label: {sum(len(q) > 1 for q in queues.values())}; "
        "each storm task name has one queue)"
    )
    return lines


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


def table(rounds: list[Outcome]) -> str:
    """Each round's consumers side by side, then the medians; ratios to the bare receiver."""
    head = (
        "round",
        "consumer",
        "events",
        "seconds",
        "events/s",
        "ratio",
        "CPU s",
        "peak RSS MB",
        "Redis cores",
        "others' cores",
    )
    rows = [head]

    def row(label: str, r: Result, bare_rate: float) -> tuple[str, ...]:
        return (
            label,
            r.consumer + ("" if r.complete else " (INCOMPLETE)"),
            f"{r.events:,}",
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            f"{r.rate / bare_rate:.2f}" if bare_rate else "-",
            f"{r.cpu_seconds:.2f}",
            f"{r.peak_rss_kb / 1024:.0f}",
            f"{r.redis_cores:.2f}",
            f"{r.other_cores:.2f}",
        )

    for i, out in enumerate(rounds, 1):
        first = "bare" if out.order[0] is out.bare else "exporter"
        for r in out.order:
            rows.append(row(f"{i} ({first} first)", r, out.bare.rate))
    bare, exporter = medians(rounds)
    for r in (bare, exporter):
        rows.append(row("median", r, bare.rate))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


@dataclass
class Outcome:
    """Everything one round measured."""

    bare: Result
    exporter: Result
    order: tuple[Result, Result]
    scrapes: Scrapes
    checks: list[str]
    published_seconds: float
    backlog_mb: dict[str, float]


def medians(rounds: list[Outcome]) -> tuple[Result, Result]:
    """Per consumer: the median drain time and CPU over the rounds, the highest peak RSS."""
    out = []
    for pick in (lambda o: o.bare, lambda o: o.exporter):
        results = [pick(o) for o in rounds]
        out.append(
            Result(
                results[0].consumer,
                min(r.events for r in results),
                results[0].expected,
                statistics.median(r.seconds for r in results),
                statistics.median(r.cpu_seconds for r in results),
                max(r.peak_rss_kb for r in results),
                max(r.rss_before_kb for r in results),
                complete=all(r.complete for r in results),
                redis_cores=statistics.median(r.redis_cores for r in results),
                other_cores=statistics.median(r.other_cores for r in results),
            )
        )
    return out[0], out[1]


def start_consumers(
    args: argparse.Namespace, r: redis.Redis, db: int, storm: Storm, workdir: Path
) -> tuple[BareReceiver, Exporter]:
    """Start both, each waited for until Redis shows its pattern subscription."""
    max_tasks = args.max_tasks or max(storm.spec.tasks * 11 // 10, storm.spec.tasks + 1000)
    bare = BareReceiver(args.broker, workdir / "bare_receiver.log")
    exporter = None
    try:
        wait_for("the bare receiver to consume", bare.ready, 30)
        wait_for("the bare receiver's subscription", lambda: bare.subscription(r, db), 30)
        exporter = Exporter(
            args.broker, free_port(), max_tasks, args.exporter_arg, workdir / "exporter.log"
        )
        wait_for("the exporter's /healthz", exporter.ready, 60)
        wait_for("the exporter's subscription", lambda: exporter.subscription(r, db), 30)
    except BaseException:
        for consumer in (bare, exporter):
            if consumer is not None:
                consumer.stop()
        raise
    return bare, exporter


def measure(
    args: argparse.Namespace,
    r: redis.Redis,
    db: int,
    storm: Storm,
    workdir: Path,
    exporter_first: bool,
) -> Outcome:
    """One round: subscribe both, freeze, publish, then thaw and drain each in turn."""
    bare, exporter = start_consumers(args, r, db, storm, workdir)
    redis_pid = int(r.info("server").get("process_id", 0))
    try:
        for consumer in (bare, exporter):
            settle(consumer)
            freeze(consumer)
        published = publish(storm, args.broker)
        backlog = {}
        for consumer in (bare, exporter):
            client = consumer.subscription(r, db)
            if client is None:
                raise BenchError(f"Redis dropped {consumer.name}'s subscription while frozen")
            backlog[consumer.name] = int(client["omem"]) / 1e6
        results: list[Result] = []
        for consumer in (exporter, bare) if exporter_first else (bare, exporter):
            result = drain(consumer, storm.events, args.timeout, redis_pid)
            results.append(result)
            print(f"  {consumer.name}: drained in {result.seconds:.2f} s", flush=True)
            if consumer is exporter:
                exporter_result = result
                checks = exporter_checks(exporter, storm)
                scrapes = time_scrapes(exporter, args.scrapes)
                result.peak_rss_kb = memory_kb(exporter.pid, "VmHWM")
            else:
                bare_result = result
            consumer.stop()
    finally:
        bare.stop()
        exporter.stop()
    return Outcome(
        bare_result,
        exporter_result,
        (results[0], results[1]),
        scrapes,
        checks,
        published,
        backlog,
    )


def report(storm: Storm, rounds: list[Outcome]) -> dict:
    """Print the table and the scrape times; return the same as a dict for --json."""
    bare, exporter = medians(rounds)
    ratio = exporter.rate / bare.rate if bare.rate else 0.0
    ms = [s * 1000 for out in rounds for s in out.scrapes.seconds]
    last = rounds[-1].scrapes
    print()
    print(f"storm: {describe(storm)}")
    for i, out in enumerate(rounds, 1):
        print(
            f"round {i}: published in {out.published_seconds:.1f} s to the frozen consumers; "
            "Redis backlog "
            + ", ".join(f"{name} {mb:.0f} MB" for name, mb in out.backlog_mb.items())
        )
    print()
    print(table(rounds))
    print()
    print(
        f"ratio of medians {ratio:.2f} (per round: "
        + ", ".join(f"{o.exporter.rate / o.bare.rate:.2f}" for o in rounds)
        + f"): target >= 0.5 {'met' if ratio >= 0.5 else 'NOT met'}, "
        f"later target >= 1.0 {'met' if ratio >= 1.0 else 'not met'}"
    )
    by_cpu = bare.cpu_seconds / exporter.cpu_seconds if exporter.cpu_seconds else 0.0
    print(f"ratio by CPU time (less sensitive to a shared machine): {by_cpu:.2f}")
    busiest = max(r.other_cores for o in rounds for r in (o.bare, o.exporter))
    if busiest > SHARED:
        print(
            f"note: other processes kept up to {busiest:.2f} cores busy during a drain; "
            "on this 2-core machine that slows the consumer: compare rounds, rerun when quiet"
        )
    for i, out in enumerate(rounds, 1):
        for line in out.checks:
            print(f"round {i}: {line}")
    print(
        f"/metrics after the drain, {len(ms)} GETs ({last.series:,} samples, "
        f"{last.bytes / 1e3:.0f} kB): median {statistics.median(ms):.1f} ms, "
        f"max {max(ms):.1f} ms (collect in the exporter: {last.collect_seconds * 1000:.1f} ms)"
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "storm": {
            **asdict(storm.spec),
            "events": storm.events,
            "messages": len(storm.messages),
            "bytes": storm.size,
        },
        "median": {
            "bare": asdict(bare),
            "exporter": asdict(exporter),
            "ratio": ratio,
            "ratio_by_cpu": by_cpu,
        },
        "rounds": [
            {
                "bare": {**asdict(o.bare), "rate": o.bare.rate},
                "exporter": {**asdict(o.exporter), "rate": o.exporter.rate},
                "first": o.order[0].consumer,
                "checks": o.checks,
                "scrapes": asdict(o.scrapes),
                "published_seconds": o.published_seconds,
                "backlog_mb": o.backlog_mb,
            }
            for o in rounds
        ],
        "scrape_ms": {"median": statistics.median(ms), "max": max(ms)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    spec_arguments(parser)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--max-tasks", type=int, default=0, help="exporter --max-tasks [default: tasks + 10%%]"
    )
    parser.add_argument("--scrapes", type=int, default=5, help="GETs of /metrics to time")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per drain")
    parser.add_argument("--rounds", type=int, default=3, help="runs, each with fresh consumers")
    parser.add_argument(
        "--order",
        choices=["alternate", "bare-first", "exporter-first"],
        default="alternate",
        help="which consumer is thawed first [alternate: bare in odd rounds]",
    )
    parser.add_argument(
        "--exporter-arg", action="append", default=[], help="extra exporter option (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    if min(args.rounds, args.scrapes) < 1:
        parser.error("--rounds and --scrapes must be at least 1")

    def interrupted(signum: int, frame: object) -> None:
        """SIGTERM unwinds like Ctrl-C, so children and the Redis config are cleaned up."""
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    storm = build_storm(spec_from(args))
    print(f"storm built: {describe(storm)}", flush=True)
    try:
        rounds = run_rounds(args, storm)
    except (BenchError, redis.RedisError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; consumers stopped and the Redis config restored", file=sys.stderr)
        return 130
    figures = report(storm, rounds)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def run_rounds(args: argparse.Namespace, storm: Storm) -> list[Outcome]:
    """The rounds, with Redis keeping whole backlogs for frozen subscribers meanwhile."""
    r, db = redis_target(args.broker)
    limit_key = "client-output-buffer-limit"
    previous = r.config_get(limit_key)[limit_key]
    r.config_set(limit_key, "pubsub 0 0 0")
    print(f"Redis {limit_key} was {previous!r}; pubsub 0 0 0 until the end", flush=True)
    rounds = []
    try:
        with tempfile.TemporaryDirectory(prefix="clearly-bench-") as tmp:
            for i in range(args.rounds):
                exporter_first = args.order == "exporter-first" or (
                    args.order == "alternate" and i % 2 == 1
                )
                print(f"round {i + 1} of {args.rounds}", flush=True)
                rounds.append(measure(args, r, db, storm, Path(tmp), exporter_first))
    finally:
        r.config_set(limit_key, previous)
    return rounds


if __name__ == "__main__":
    sys.exit(main())

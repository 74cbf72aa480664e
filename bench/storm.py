"""A storm of Celery task events, built and published the way a busy cluster sends them.

Each task brings the events of its outcome: by default the four of a success,
``task-sent`` from the producing client, ``task-received``, ``task-started`` and
``task-succeeded`` from the worker running it. ``--outcomes`` mixes in failures,
retries, revocations, rejections and tasks still in progress, and ``--queues`` sends
every task name to several queues, so that every label combination of the metrics
shows up.
Fields, key order and values follow what Celery 5 puts in them, so a consumer pays the
real decoding cost. Events are laid on a simulated timeline and each sender buffers
its own, flushing a list body when the buffer is full, as the worker's event
dispatcher does for the ``task`` group (``task.multi``). Heartbeats are single messages
(Celery never buffers the ``worker`` group).

Run alone to publish a storm at a live consumer, or with ``--dry-run`` to see its size::

    python bench/storm.py --tasks 10000 --broker redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import platform
import random
import re
import sys
import time
import uuid
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import celery
from celery.events.event import get_exchange
from celery.utils.time import utcoffset
from kombu import Connection, Producer
from kombu.utils.json import dumps

#: Where task types are routed; weights make ``celery`` the busiest, as it usually is.
QUEUES = (("celery", 6), ("default", 3), ("priority", 1), ("io", 2))
MODULES = ("billing", "mailer", "reports", "imports", "search", "media", "auth", "sync")
VERBS = ("process", "send", "render", "refresh", "index", "resize", "notify", "export")
#: Share of tasks started by another task (they carry its root_id and parent_id).
CHILD_SHARE = 0.1
#: Share of tasks sent with a countdown (an ``eta``).
ETA_SHARE = 0.01
#: What becomes of a task, and how many of its attempts end (each becomes one span).
OUTCOMES: dict[str, int] = {
    "success": 1,
    "failure": 1,
    "retry": 2,
    "retrying": 1,
    "revoked": 1,
    "rejected": 1,
    "started": 0,
    "received": 0,
    "pending": 0,
}
#: ``--outcomes all``: every outcome, most tasks still succeeding, as in a real cluster.
ALL_OUTCOMES: tuple[tuple[str, float], ...] = (
    ("success", 80),
    ("failure", 5),
    ("retry", 4),
    ("retrying", 1),
    ("revoked", 2),
    ("rejected", 2),
    ("started", 3),
    ("received", 2),
    ("pending", 1),
)
#: A failing task type fails with one class: more would multiply the failure series.
EXCEPTIONS = ("ValueError", "KeyError", "TimeoutError", "ConnectionError", "bench.errors.Flaky")


class Message(NamedTuple):
    """One publish: the routing key, the JSON body, the sender's ``hostname`` header."""

    routing_key: str
    body: bytes
    hostname: str
    #: Events in the body, so a paced publisher can keep an event rate.
    events: int


@dataclass(frozen=True)
class StormSpec:
    """What to build; the same spec and seed always give the same events."""

    tasks: int = 100_000
    names: int = 200
    workers: int = 20
    #: Producer processes sending task-sent events.
    clients: int = 4
    #: Events per list body: Celery's dispatcher flushes its task buffer at 24 by default.
    batch: int = 24
    #: Events per task-sent body; 1 is what a client really sends (it never buffers).
    sent_batch: int = 24
    #: Tasks per second on the simulated timeline; it sets how far back timestamps go.
    rate: float = 1000.0
    #: Seconds between a worker's heartbeats on the timeline; 0 sends none.
    heartbeat: float = 2.0
    seed: int = 1
    #: 0: each task name has one queue (from QUEUES), as apps route by name; N: each
    #: task goes to one of N queues, so every name shows up under every queue.
    queues: int = 0
    #: (outcome, weight) pairs; see OUTCOMES.
    outcomes: tuple[tuple[str, float], ...] = (("success", 1.0),)
    #: 8 hex digits starting every task id, so that a publisher can send the storm
    #: again as new tasks by rewriting them (see ``renamed``); empty: random ids.
    id_prefix: str = ""


@dataclass
class Storm:
    """The messages to publish, in order, and what they hold."""

    spec: StormSpec
    messages: list[Message]
    counts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    @property
    def spans(self) -> int:
        """Attempts that end, so the spans an exporter makes of the storm."""
        return sum(OUTCOMES[outcome] * n for outcome, n in self.outcomes.items())

    @property
    def size(self) -> int:
        return sum(len(m.body) for m in self.messages)


@dataclass
class _Sender:
    """A process sending events: its identity, Lamport clock and unflushed buffer."""

    hostname: str
    pid: int
    clock: int
    limit: int
    buffer: list[dict] = field(default_factory=list)
    active: int = 0
    processed: int = 0


@dataclass(frozen=True)
class _TaskType:
    name: str
    queue: str
    arity: int
    median_runtime: float
    exception: str


def _task_types(rng: random.Random, count: int) -> list[_TaskType]:
    queues = [q for q, _ in QUEUES]
    weights = [w for _, w in QUEUES]
    types = []
    for i in range(count):
        module = MODULES[i % len(MODULES)]
        verb = VERBS[(i // len(MODULES)) % len(VERBS)]
        types.append(
            _TaskType(
                name=f"bench.{module}.tasks.{verb}_{i:04d}",
                queue=rng.choices(queues, weights)[0],
                arity=rng.randrange(4),
                median_runtime=10 ** rng.uniform(-2.3, 0.3),
                exception=EXCEPTIONS[i % len(EXCEPTIONS)],
            )
        )
    return types


def queue_names(count: int) -> list[str]:
    """``--queues N``: QUEUES' names first, then ``q5``, ``q6``..."""
    names = [q for q, _ in QUEUES]
    return names[:count] + [f"q{k}" for k in range(len(names) + 1, count + 1)]


def parse_outcomes(text: str) -> tuple[tuple[str, float], ...]:
    """``all``, or ``outcome[=weight],...`` (weight 1 when left out)."""
    if text == "all":
        return ALL_OUTCOMES
    out = []
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in OUTCOMES:
            raise ValueError(f"unknown outcome {name!r}: one of {', '.join(OUTCOMES)} or 'all'")
        out.append((name, float(weight) if weight else 1.0))
    return tuple(out)


def _event(sender: _Sender, offset: float, etype: str, ts: float, **fields: object) -> dict:
    """An event dict with Celery's key order: identity, clock, fields, timestamp, type."""
    sender.clock += 1
    return {
        "hostname": sender.hostname,
        "utcoffset": offset,
        "pid": sender.pid,
        "clock": sender.clock,
        **fields,
        "timestamp": ts,
        "type": etype,
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "+00:00"


def _failure(rng: random.Random, kind: _TaskType) -> dict:
    """``exception`` and ``traceback`` as task-failed and task-retried carry them."""
    message = f"bench failure {rng.randrange(10**6)}"
    module = kind.name.rsplit(".", 1)[0].replace(".", "/")
    return {
        "exception": f"{kind.exception}({message!r})",
        "traceback": (
            "Traceback (most recent call last):\n"
            '  File "celery/app/trace.py", line 453, in trace_task\n'
            "    R = retval = fun(*args, **kwargs)\n"
            f'  File "{module}.py", line {rng.randrange(10, 400)}, in '
            f"{kind.name.rsplit('.', 1)[1]}\n"
            "    raise error\n"
            f"{kind.exception}: {message}\n"
        ),
    }


def _result(rng: random.Random) -> str:
    """A ``saferepr`` of a return value, as task-succeeded carries it."""
    pick = rng.random()
    if pick < 0.4:
        return "None"
    if pick < 0.8:
        return repr(rng.randrange(10_000))
    return repr({"status": "ok", "rows": rng.randrange(1000)})


Timeline = list[tuple[float, int, _Sender, str, dict]]
TaskEvents = list[tuple[float, _Sender, str, dict]]


@dataclass(frozen=True)
class _Task:
    """One task's identity and the fields its task-sent and task-received repeat."""

    uuid: str
    root: str
    parent: str | None
    name: str
    args: str
    kwargs: str
    queue: str

    def sent(self, retries: int, eta: str | None) -> dict:
        return {
            "uuid": self.uuid,
            "root_id": self.root,
            "parent_id": self.parent,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "retries": retries,
            "eta": eta,
            "expires": None,
            "queue": self.queue,
            "exchange": "",
            "routing_key": self.queue,
        }

    def received(self, retries: int, eta: str | None) -> dict:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "root_id": self.root,
            "parent_id": self.parent,
            "retries": retries,
            "eta": eta,
            "expires": None,
        }


def _fates(
    rng: random.Random,
    outcome: str,
    task: _Task,
    kind: _TaskType,
    eta: str | None,
    times: tuple[float, float, float],
    worker: _Sender,
    workers: list[_Sender],
) -> TaskEvents:
    """The worker-side events of a task after its task-sent, for its outcome."""
    received, started, runtime = times
    uid = {"uuid": task.uuid}
    if outcome == "pending":
        return []
    if outcome == "revoked":
        fields = {**uid, "terminated": False, "signum": None, "expired": False}
        return [(received, worker, "task-revoked", fields)]
    out = [(received, worker, "task-received", task.received(0, eta))]
    if outcome == "rejected":
        out.append((received + 0.001, worker, "task-rejected", {**uid, "requeue": False}))
    if outcome in ("received", "rejected"):
        return out
    out.append((started, worker, "task-started", uid))
    ended = started + runtime
    if outcome == "success":
        out.append(
            (ended, worker, "task-succeeded", {**uid, "result": _result(rng), "runtime": runtime})
        )
    elif outcome == "failure":
        out.append((ended, worker, "task-failed", {**uid, **_failure(rng, kind)}))
    elif outcome in ("retry", "retrying"):
        out.append((ended, worker, "task-retried", {**uid, **_failure(rng, kind)}))
    if outcome != "retry":
        return out
    # The worker sends the task again (task-sent, retries 1), with a countdown.
    again = ended + rng.uniform(0.5, 3.0)
    out.append((ended + 0.001, worker, "task-sent", task.sent(1, _iso(again))))
    runner = rng.choice(workers)
    out.append((ended + 0.002, runner, "task-received", task.received(1, _iso(again))))
    restarted = again + rng.expovariate(1 / 0.005)
    out.append((restarted, runner, "task-started", uid))
    rerun = kind.median_runtime * rng.lognormvariate(0, 0.5)
    result = {**uid, "result": _result(rng), "runtime": rerun}
    out.append((restarted + rerun, runner, "task-succeeded", result))
    return out


def _plan(
    spec: StormSpec, rng: random.Random, now: float
) -> tuple[Timeline, list[_Sender], Counter[str]]:
    """Every task's events on the timeline, the senders they come from, the outcomes."""
    if min(spec.tasks, spec.names, spec.workers, spec.clients, spec.batch, spec.sent_batch) < 1:
        raise ValueError("tasks, names, workers, clients and batch sizes must be at least 1")
    if spec.queues < 0 or not spec.outcomes:
        raise ValueError("queues must be 0 or more, and at least one outcome given")
    if spec.id_prefix and not re.fullmatch(r"[0-9a-f]{8}", spec.id_prefix):
        raise ValueError("id_prefix must be 8 lowercase hex digits")
    types = _task_types(rng, spec.names)
    popularity = [1.0 / (rank + 1) for rank in range(spec.names)]
    queues = queue_names(spec.queues)
    outcomes = [o for o, _ in spec.outcomes]
    weights = [w for _, w in spec.outcomes]
    # The first tasks go through every (name, queue, outcome) once, the rest are drawn.
    combos = spec.names * max(spec.queues, 1) * len(outcomes)
    workers = [
        _Sender(f"celery@bench-{n}", rng.randrange(1000, 60000), rng.randrange(10**5), spec.batch)
        for n in range(1, spec.workers + 1)
    ]
    clients = [
        _Sender(f"gen{pid}@bench-client-{k}", pid, rng.randrange(10**5), spec.sent_batch)
        for k, pid in enumerate(rng.sample(range(1000, 60000), spec.clients), 1)
    ]
    span = spec.tasks / spec.rate
    start = now - span - 5.0
    timeline: Timeline = []
    ids: list[str] = []
    roots: dict[str, str] = {}
    made: Counter[str] = Counter()
    for i in range(spec.tasks):
        if i < combos:
            kind = types[i % spec.names]
            queue = queues[(i // spec.names) % len(queues)] if queues else kind.queue
            outcome = outcomes[i // (spec.names * max(spec.queues, 1)) % len(outcomes)]
        else:
            kind = rng.choices(types, popularity)[0]
            queue = queues[rng.randrange(len(queues))] if queues else kind.queue
            outcome = rng.choices(outcomes, weights)[0] if len(outcomes) > 1 else outcomes[0]
        made[outcome] += 1
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if spec.id_prefix:
            task_id = spec.id_prefix + task_id[8:]
        parent = rng.choice(ids) if ids and rng.random() < CHILD_SHARE else None
        root = roots[parent] if parent else task_id
        roots[task_id] = root
        ids.append(task_id)
        sent = start + i / spec.rate + rng.uniform(0, 1 / spec.rate)
        countdown = rng.uniform(1, 30) if rng.random() < ETA_SHARE else 0.0
        eta = _iso(sent + countdown) if countdown else None
        args = "(" + ", ".join(str(rng.randrange(10**6)) for _ in range(kind.arity)) + ")"
        kwargs = "{}" if rng.random() < 0.7 else repr({"user_id": rng.randrange(10**6)})
        task = _Task(task_id, root, parent, kind.name, args, kwargs, queue)
        received = sent + rng.expovariate(1 / 0.02)
        started = received + countdown + rng.expovariate(1 / 0.005)
        runtime = kind.median_runtime * rng.lognormvariate(0, 0.5)
        worker = rng.choice(workers)
        events = [(sent, rng.choice(clients), "task-sent", task.sent(0, eta))]
        times = (received, started, runtime)
        events += _fates(rng, outcome, task, kind, eta, times, worker, workers)
        for k, (ts, sender, etype, fields) in enumerate(events):
            timeline.append((ts, 8 * i + k, sender, etype, fields))
    if spec.heartbeat > 0:
        beats = int(span / spec.heartbeat) + 1
        for n, worker in enumerate(workers):
            first = start + rng.uniform(0, spec.heartbeat)
            for b in range(beats):
                etype = "worker-online" if b == 0 else "worker-heartbeat"
                seq = -1 - n - b * len(workers)
                timeline.append((first + b * spec.heartbeat, seq, worker, etype, {}))
    heapq.heapify(timeline)
    return timeline, workers + clients, made


def build_storm(spec: StormSpec, now: float | None = None) -> Storm:
    """Lay the storm's events on a timeline that ends now, and batch them per sender."""
    rng = random.Random(spec.seed)
    offset = utcoffset()
    timeline, senders, outcomes = _plan(spec, rng, time.time() if now is None else now)
    storm = Storm(spec, [], outcomes=outcomes)
    software = {"sw_ident": "py-celery", "sw_ver": celery.__version__, "sw_sys": platform.system()}

    def flush(sender: _Sender) -> None:
        if sender.buffer:
            body = dumps(sender.buffer).encode()
            storm.messages.append(Message("task.multi", body, sender.hostname, len(sender.buffer)))
            sender.buffer = []

    while timeline:
        ts, _, sender, etype, fields = heapq.heappop(timeline)
        storm.counts[etype] += 1
        if etype.startswith("worker-"):
            load = round(min(sender.active / 8, 4.0), 2)
            event = _event(
                sender,
                offset,
                etype,
                ts,
                freq=spec.heartbeat,
                active=sender.active,
                processed=sender.processed,
                loadavg=[load, load, load],
                **software,
            )
            storm.messages.append(
                Message(etype.replace("-", "."), dumps(event).encode(), sender.hostname, 1)
            )
            continue
        if etype == "task-started":
            sender.active += 1
        elif etype in ("task-succeeded", "task-failed", "task-retried"):
            sender.active -= 1
            sender.processed += 1
        sender.buffer.append(_event(sender, offset, etype, ts, **fields))
        if len(sender.buffer) >= sender.limit:
            flush(sender)
    for sender in senders:
        flush(sender)
    return storm


class Publisher:
    """A producer on the broker's event exchange, publishing bodies as a worker does."""

    def __init__(self, url: str) -> None:
        self.connection = Connection(url)
        self.producer = Producer(
            self.connection.default_channel, exchange=get_exchange(self.connection)
        )

    def send(self, message: Message) -> None:
        self.producer.publish(
            message.body,
            routing_key=message.routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"hostname": message.hostname},
            delivery_mode=1,
        )

    def batch(self) -> AbstractContextManager:
        """Messages sent inside it go out together, in one of the transport's pipelines
        (kombu 5.7's ``Producer.batch``); before 5.7, or on a transport without them, each
        goes at once."""
        batch = getattr(self.producer, "batch", None)
        return nullcontext() if batch is None else batch()

    def close(self) -> None:
        self.connection.release()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def renamed(message: Message, prefix: str, new: str) -> Message:
    """The message with task ids starting ``prefix`` (a storm's ``id_prefix``) starting
    ``new`` instead: the same events for other tasks, at the cost of a bytes.replace."""
    body = message.body.replace(f'"{prefix}-'.encode(), f'"{new}-'.encode())
    return message._replace(body=body)


def publish(storm: Storm, url: str) -> float:
    """Publish every message, as fast as it goes; return the seconds it took."""
    with Publisher(url) as publisher:
        started = time.perf_counter()
        for message in storm.messages:
            publisher.send(message)
        return time.perf_counter() - started


def describe(storm: Storm) -> str:
    """One line saying what the storm holds."""
    spec = storm.spec
    by_type = ", ".join(f"{etype} {n}" for etype, n in sorted(storm.counts.items()))
    routing = f"{spec.queues} queues per name" if spec.queues else "one queue per name"
    mix = ""
    if set(storm.outcomes) != {"success"}:
        mix = " outcomes " + ", ".join(f"{o} {n}" for o, n in storm.outcomes.most_common()) + ";"
    return (
        f"{spec.tasks} tasks, {storm.events} events in {len(storm.messages)} messages "
        f"({storm.size / 1e6:.1f} MB of JSON), {spec.names} task names, {routing}, "
        f"{spec.workers} workers, batch {spec.batch}, seed {spec.seed}:{mix} {by_type}"
    )


def spec_arguments(parser: argparse.ArgumentParser, base: StormSpec | None = StormSpec()) -> None:
    """The storm's options, shared with the runner.

    With ``base`` None every option defaults to None, so a runner can fill what was not
    given from the defaults of each of its modes (see ``spec_from``).
    """

    def default(name: str) -> object:
        return None if base is None else getattr(base, name)

    def add(flag: str, kind: type, help: str) -> None:
        name = flag[2:].replace("-", "_")
        parser.add_argument(flag, type=kind, default=default(name), help=help)

    add("--tasks", int, "tasks")
    add("--names", int, "distinct task names")
    add("--workers", int, "worker hostnames")
    add("--clients", int, "producers of task-sent")
    add("--batch", int, "events per worker message")
    add("--sent-batch", int, "events per task-sent message")
    add("--rate", float, "simulated tasks per second")
    add("--heartbeat", float, "heartbeat interval, 0 for none")
    add("--seed", int, "random seed")
    add("--queues", int, "0: one queue per task name; N: every task to one of N queues")

    def outcomes(text: str) -> tuple[tuple[str, float], ...]:
        try:
            return parse_outcomes(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parser.add_argument(
        "--outcomes",
        type=outcomes,
        default=default("outcomes"),
        help=f"'all', or a mix like success=90,failure=10; outcomes: {', '.join(OUTCOMES)}",
    )


def spec_from(args: argparse.Namespace, base: StormSpec | None = None) -> StormSpec:
    """The spec the options ask for; options left at None take ``base``'s values."""
    base = base or StormSpec()
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(StormSpec)
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(base, **given)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    spec_arguments(parser)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--dry-run", action="store_true", help="build and describe only")
    args = parser.parse_args(argv)
    storm = build_storm(spec_from(args))
    print(describe(storm))
    if not args.dry_run:
        seconds = publish(storm, args.broker)
        print(f"published in {seconds:.2f} s ({storm.events / seconds:,.0f} events/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A storm of Celery task events, built and published the way a busy cluster sends them.

Each task brings the four events of a success: ``task-sent`` from the producing client,
``task-received``, ``task-started`` and ``task-succeeded`` from the worker running it.
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
import heapq
import platform
import random
import sys
import time
import uuid
from collections import Counter
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


class Message(NamedTuple):
    """One publish: the routing key, the JSON body and the sender's ``hostname`` header."""

    routing_key: str
    body: bytes
    hostname: str


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


@dataclass
class Storm:
    """The messages to publish, in order, and what they hold."""

    spec: StormSpec
    messages: list[Message]
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

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
            )
        )
    return types


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


def _result(rng: random.Random) -> str:
    """A ``saferepr`` of a return value, as task-succeeded carries it."""
    pick = rng.random()
    if pick < 0.4:
        return "None"
    if pick < 0.8:
        return repr(rng.randrange(10_000))
    return repr({"status": "ok", "rows": rng.randrange(1000)})


Timeline = list[tuple[float, int, _Sender, str, dict]]


def _plan(spec: StormSpec, rng: random.Random, now: float) -> tuple[Timeline, list[_Sender]]:
    """Every task's events on the timeline, and the senders they come from."""
    if min(spec.tasks, spec.names, spec.workers, spec.clients, spec.batch, spec.sent_batch) < 1:
        raise ValueError("tasks, names, workers, clients and batch sizes must be at least 1")
    types = _task_types(rng, spec.names)
    popularity = [1.0 / (rank + 1) for rank in range(spec.names)]
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
    for i in range(spec.tasks):
        kind = types[i] if i < spec.names else rng.choices(types, popularity)[0]
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        parent = rng.choice(ids) if ids and rng.random() < CHILD_SHARE else None
        root = roots[parent] if parent else task_id
        roots[task_id] = root
        ids.append(task_id)
        sent = start + i / spec.rate + rng.uniform(0, 1 / spec.rate)
        countdown = rng.uniform(1, 30) if rng.random() < ETA_SHARE else 0.0
        eta = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sent + countdown)) + "+00:00"
            if countdown
            else None
        )
        args = "(" + ", ".join(str(rng.randrange(10**6)) for _ in range(kind.arity)) + ")"
        kwargs = "{}" if rng.random() < 0.7 else repr({"user_id": rng.randrange(10**6)})
        common = {
            "name": kind.name,
            "args": args,
            "kwargs": kwargs,
        }
        received = sent + rng.expovariate(1 / 0.02)
        started = received + countdown + rng.expovariate(1 / 0.005)
        runtime = kind.median_runtime * rng.lognormvariate(0, 0.5)
        worker = rng.choice(workers)
        seq = 4 * i
        timeline.append(
            (
                sent,
                seq,
                rng.choice(clients),
                "task-sent",
                {
                    "uuid": task_id,
                    "root_id": root,
                    "parent_id": parent,
                    **common,
                    "retries": 0,
                    "eta": eta,
                    "expires": None,
                    "queue": kind.queue,
                    "exchange": "",
                    "routing_key": kind.queue,
                },
            )
        )
        timeline.append(
            (
                received,
                seq + 1,
                worker,
                "task-received",
                {
                    "uuid": task_id,
                    **common,
                    "root_id": root,
                    "parent_id": parent,
                    "retries": 0,
                    "eta": eta,
                    "expires": None,
                },
            )
        )
        timeline.append((started, seq + 2, worker, "task-started", {"uuid": task_id}))
        timeline.append(
            (
                started + runtime,
                seq + 3,
                worker,
                "task-succeeded",
                {"uuid": task_id, "result": _result(rng), "runtime": runtime},
            )
        )
    if spec.heartbeat > 0:
        beats = int(span / spec.heartbeat) + 1
        for n, worker in enumerate(workers):
            first = start + rng.uniform(0, spec.heartbeat)
            for b in range(beats):
                etype = "worker-online" if b == 0 else "worker-heartbeat"
                seq = -1 - n - b * len(workers)
                timeline.append((first + b * spec.heartbeat, seq, worker, etype, {}))
    heapq.heapify(timeline)
    return timeline, workers + clients


def build_storm(spec: StormSpec, now: float | None = None) -> Storm:
    """Lay the storm's events on a timeline that ends now, and batch them per sender."""
    rng = random.Random(spec.seed)
    offset = utcoffset()
    timeline, senders = _plan(spec, rng, time.time() if now is None else now)
    storm = Storm(spec, [])
    software = {"sw_ident": "py-celery", "sw_ver": celery.__version__, "sw_sys": platform.system()}

    def flush(sender: _Sender) -> None:
        if sender.buffer:
            body = dumps(sender.buffer).encode()
            storm.messages.append(Message("task.multi", body, sender.hostname))
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
                Message(etype.replace("-", "."), dumps(event).encode(), sender.hostname)
            )
            continue
        if etype == "task-started":
            sender.active += 1
        elif etype == "task-succeeded":
            sender.active -= 1
            sender.processed += 1
        sender.buffer.append(_event(sender, offset, etype, ts, **fields))
        if len(sender.buffer) >= sender.limit:
            flush(sender)
    for sender in senders:
        flush(sender)
    return storm


def publish(storm: Storm, url: str) -> float:
    """Publish every message on the broker's event exchange; return the seconds it took."""
    with Connection(url) as conn:
        producer = Producer(conn.default_channel, exchange=get_exchange(conn))
        started = time.perf_counter()
        for message in storm.messages:
            producer.publish(
                message.body,
                routing_key=message.routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                headers={"hostname": message.hostname},
                delivery_mode=1,
            )
        return time.perf_counter() - started


def describe(storm: Storm) -> str:
    """One line saying what the storm holds."""
    by_type = ", ".join(f"{etype} {n}" for etype, n in sorted(storm.counts.items()))
    return (
        f"{storm.spec.tasks} tasks, {storm.events} events in {len(storm.messages)} messages "
        f"({storm.size / 1e6:.1f} MB of JSON), {storm.spec.names} task names, "
        f"{storm.spec.workers} workers, batch {storm.spec.batch}: {by_type}"
    )


def spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The storm's options, shared with the runner."""
    d = StormSpec()
    parser.add_argument("--tasks", type=int, default=d.tasks, help="tasks (4 events each)")
    parser.add_argument("--names", type=int, default=d.names, help="distinct task names")
    parser.add_argument("--workers", type=int, default=d.workers, help="worker hostnames")
    parser.add_argument("--clients", type=int, default=d.clients, help="producers of task-sent")
    parser.add_argument("--batch", type=int, default=d.batch, help="events per worker message")
    parser.add_argument(
        "--sent-batch", type=int, default=d.sent_batch, help="events per task-sent message"
    )
    parser.add_argument("--rate", type=float, default=d.rate, help="simulated tasks per second")
    parser.add_argument(
        "--heartbeat", type=float, default=d.heartbeat, help="heartbeat interval, 0 for none"
    )
    parser.add_argument("--seed", type=int, default=d.seed)


def spec_from(args: argparse.Namespace) -> StormSpec:
    return StormSpec(
        tasks=args.tasks,
        names=args.names,
        workers=args.workers,
        clients=args.clients,
        batch=args.batch,
        sent_batch=args.sent_batch,
        rate=args.rate,
        heartbeat=args.heartbeat,
        seed=args.seed,
    )


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

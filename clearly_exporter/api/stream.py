"""The live stream: every transition and worker change, fanned out to SSE clients.

The consumer thread pays one tuple appended to a deque per transition, and nothing at
all while no client is connected (the hub then unsubscribes from the engine). The
HTTP loop drains the deque every ``FLUSH`` seconds, in order, encodes each item once
and queues it for the clients whose filters take it.

Memory stays bounded: a client with more than ``max_pending`` bytes waiting is cut
off with a reason, and the deque holds at most ``max_inbox`` items; past that every
client is cut off, since each would miss transitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from clearly_exporter.api.filters import Matcher
from clearly_exporter.api.views import VALUES
from clearly_exporter.engine import Engine, Transition
from clearly_exporter.engine.records import WorkerRecord, call_of
from clearly_exporter.engine.states import FAILURE, RETRY, SUCCESS
from clearly_exporter.traces.redact import Redactor

log = logging.getLogger(__name__)

#: Seconds between two drains of the deque: the stream's added latency.
FLUSH = 0.05
#: Seconds between checks for workers gone silent.
WORKER_CHECK = 1.0
#: Seconds a cut-off client gets to take its last event before its connection goes.
CUT_GRACE = 10.0
#: Items encoded between two yields to the loop.
BATCH = 500
KEEPALIVE = b": keepalive\n\n"
#: Bytes handed to a connection at once.
WRITE = 256 << 10
#: Redacted values remembered (the cache is emptied when full), and the longest kept.
REDACTED_CACHE = 1024
REDACTED_LENGTH = 4096

TASK = 0
WORKER = 1
#: Fields of a task item after its kind, in order.
TASK_FIELDS = (
    "uuid",
    "name",
    "state",
    "inferred",
    "current",
    "timestamp",
    "received_at",
    "retries",
    "worker",
    "queue",
    "routing_key",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "root_id",
    "parent_id",
)
#: Fields of a worker item after its kind, in order.
WORKER_FIELDS = (
    "hostname",
    "event",
    "state",
    "timestamp",
    "last_heartbeat",
    "freq",
    "active",
    "processed",
    "loadavg",
    "sw_ident",
    "sw_ver",
    "sw_sys",
    "pid",
)
#: Positions in an item (after its kind) of the fields filters look at.
_UUID, _NAME, _ROUTING_KEY = (1 + TASK_FIELDS.index(f) for f in ("uuid", "name", "routing_key"))
WORKER_EVENTS = {"worker-online": "online", "worker-heartbeat": "heartbeat"}
#: How long the loop waits for the engine lock to check worker timeouts.
LOCK_WAIT = 0.01


def sse(event: str, data: object) -> bytes:
    """One server-sent event; orjson never writes a raw newline, so one data line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass(frozen=True)
class StreamFilter:
    """What one client wants: tasks by name/routing key/uuid, workers by hostname."""

    tasks: Matcher
    workers: Matcher

    def wants(self, item: tuple) -> bool:
        if item[0] == TASK:
            return self.tasks(item[_NAME], item[_ROUTING_KEY], item[_UUID])
        return self.workers(item[1])


class StreamClient:
    """One connected client: its filter, and the events waiting for its connection."""

    def __init__(self, filters: StreamFilter, transport: asyncio.Transport | None) -> None:
        self.filters = filters
        self.transport = transport
        self.pending = 0
        self.reason: str | None = None
        self.finished = False
        self._chunks: list[bytes] = []
        self._ready = asyncio.Event()

    def push(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.pending += len(chunk)
        self._ready.set()

    def end(self, reason: str) -> None:
        """No more events: what waits is dropped, the reason is the last thing sent."""
        self.reason = reason
        self._chunks = [sse("end", {"reason": reason})]
        self.pending = len(self._chunks[0])
        self._ready.set()

    async def next(self, keepalive: float) -> bytes:
        """What waits, joined (up to ``WRITE`` bytes, so the socket's own buffer stays
        small); a keep-alive comment after ``keepalive`` idle seconds."""
        if not self._chunks:
            try:
                await asyncio.wait_for(self._ready.wait(), keepalive)
            except asyncio.TimeoutError:
                return KEEPALIVE
        size = taken = 0
        while taken < len(self._chunks) and (not taken or size < WRITE):
            size += len(self._chunks[taken])
            taken += 1
        data = b"".join(self._chunks[:taken])
        del self._chunks[:taken]
        self.pending -= size
        if not self._chunks:
            self._ready.clear()
        return data

    @property
    def gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def abort(self) -> None:
        """Drop the connection of a client that never took its last event."""
        if not self.finished and self.transport is not None:
            self.transport.abort()


class HubFull(Exception):
    """No room for another client."""


class StreamHub:
    """Engine listener on the consumer thread, fan-out on the HTTP loop."""

    def __init__(
        self,
        engine: Engine,
        redactor: Redactor,
        clock: Callable[[], float] = time.time,
        max_clients: int = 32,
        max_pending: int = 2 << 20,
        max_inbox: int = 100_000,
    ) -> None:
        self.engine = engine
        self.redactor = redactor
        self.clock = clock
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.max_inbox = max_inbox
        self.clients: tuple[StreamClient, ...] = ()
        self.cutoffs = 0
        self._inbox: deque[tuple] = deque()
        self._overflowed = False
        #: Whether each worker last read up, as told to clients: to tell them of a timeout.
        self._up: dict[str, bool] = {}
        self._active = asyncio.Event()
        #: Clients told to end whose responses are not over yet.
        self._ending: set[StreamClient] = set()
        self._redacted: dict[str, str] = {}

    # Consumer thread, under the engine lock.

    def _on_transition(self, tr: Transition) -> None:
        if len(self._inbox) >= self.max_inbox:
            self._overflowed = True
            return
        rec, att, state = tr.task, tr.attempt, tr.state
        outcome = state in (FAILURE, RETRY)
        args, kwargs = call_of(rec, att)
        self._inbox.append(
            (
                TASK,
                rec.uuid,
                rec.name,
                state,
                tr.inferred,
                tr.current,
                tr.timestamp,
                rec.updated,
                att.retries,
                att.worker,
                rec.queue,
                rec.routing_key,
                args,
                kwargs,
                rec.result if state == SUCCESS else None,
                att.exception if outcome else None,
                att.traceback if outcome else None,
                rec.root_id,
                rec.parent_id,
            )
        )

    def _on_worker(self, worker: WorkerRecord, etype: str) -> None:
        if len(self._inbox) >= self.max_inbox:
            self._overflowed = True
            return
        self._worker_item(worker, WORKER_EVENTS.get(etype, "offline"), not worker.offline)

    def _worker_item(self, w: WorkerRecord, event: str, up: bool) -> None:
        self._inbox.append(
            (
                WORKER,
                w.hostname,
                event,
                "ONLINE" if up else "OFFLINE",
                w.last_event,
                w.alive_at,
                w.freq,
                w.active,
                w.processed,
                w.loadavg,
                w.sw_ident,
                w.sw_ver,
                w.sw_sys,
                w.pid,
            )
        )

    # HTTP loop.

    def connect(self, filters: StreamFilter, transport: asyncio.Transport | None) -> StreamClient:
        """Register a client; the first one subscribes the hub to the engine."""
        if len(self.clients) >= self.max_clients:
            raise HubFull(f"{self.max_clients} stream clients already connected")
        client = StreamClient(filters, transport)
        if not self.clients:
            with self.engine.lock:
                self._inbox.clear()
                self._overflowed = False
                self.engine.subscribe(self._on_transition)
                self.engine.workers.watch(self._on_worker)
            self._active.set()
        self.clients = (*self.clients, client)
        return client

    def disconnect(self, client: StreamClient) -> None:
        """Forget a client; without clients the consumer pays nothing for the stream."""
        if client not in self.clients:
            return
        self.clients = tuple(c for c in self.clients if c is not client)
        if not self.clients:
            self._active.clear()
            with self.engine.lock:
                self.engine.unsubscribe(self._on_transition)
                self.engine.workers.watch(None)
                self._inbox.clear()
            self._up.clear()

    def cut(self, client: StreamClient, reason: str) -> None:
        """End a slow client's stream with ``reason``; its connection goes after a grace."""
        self.cutoffs += 1
        log.warning("stream client cut off: %s", reason)
        self._end(client, reason)
        asyncio.get_running_loop().call_later(CUT_GRACE, client.abort)

    def _end(self, client: StreamClient, reason: str) -> None:
        self.disconnect(client)
        client.end(reason)
        self._ending.add(client)

    def finished(self, client: StreamClient) -> None:
        """The client's response is over (its last event sent, or its connection lost)."""
        client.finished = True
        self.disconnect(client)
        self._ending.discard(client)

    async def run(self) -> None:
        """Drain the deque every ``FLUSH`` seconds while anyone listens; forever."""
        last_check = 0.0
        while True:
            await self._active.wait()
            await asyncio.sleep(FLUSH)
            now = time.monotonic()
            if now - last_check >= WORKER_CHECK:
                last_check = now
                self._check_timeouts()
            await self.flush()

    async def flush(self) -> None:
        for client in self.clients:
            if client.gone:
                self._end(client, "connection closed")  # wakes its response, which then ends
        if self._overflowed:
            for client in self.clients:
                self.cut(client, "the stream fell behind the event rate; reconnect")
            self._overflowed = False
        inbox = self._inbox
        done = 0
        while inbox:
            self._deliver(inbox.popleft())
            done += 1
            if done % BATCH == 0:
                await asyncio.sleep(0)

    def _deliver(self, item: tuple) -> None:
        if item[0] == WORKER:
            self._up[item[1]] = item[3] == "ONLINE"
        chunk = None
        for client in self.clients:
            if not client.filters.wants(item):
                continue
            if chunk is None:
                chunk = self._encode(item)
            client.push(chunk)
            if client.pending > self.max_pending:
                self.cut(
                    client,
                    f"client too slow: over {self.max_pending >> 10} KiB of events waiting; "
                    "filter to see fewer, or reconnect",
                )

    def _encode(self, item: tuple) -> bytes:
        if item[0] == TASK:
            view = dict(zip(TASK_FIELDS, item[1:], strict=True))
            for key in VALUES:
                if view[key] is not None:
                    view[key] = self._redact(view[key])
            return sse("task", view)
        view = dict(zip(WORKER_FIELDS, item[1:], strict=True))
        view["up"] = view["state"] == "ONLINE"
        return sse("worker", view)

    def _redact(self, text: str) -> str:
        """Redaction, remembered: a task's transitions all carry the same values, and
        searching a long repr for secret keys costs microseconds each time."""
        done = self._redacted.get(text)
        if done is None:
            done = self.redactor(text) or ""
            if len(text) <= REDACTED_LENGTH:
                if len(self._redacted) >= REDACTED_CACHE:
                    self._redacted.clear()
                self._redacted[text] = done
        return done

    def _check_timeouts(self) -> None:
        """Tell clients of workers that went silent: no event says so.

        On the event loop: the consumer holds the engine lock a message at a time, but a
        scrape renders under it for 0.1 s or more; then the check waits for its next round
        rather than stall every connection.
        """
        now = self.clock()
        if not self.engine.lock.acquire(timeout=LOCK_WAIT):
            return
        try:
            workers = self.engine.workers
            known = {}
            for record in workers.records():
                was_up = self._up.get(record.hostname)
                if was_up and not workers.is_up(record, now):
                    self._worker_item(record, "timeout", False)
                    was_up = False
                if was_up is not None:
                    known[record.hostname] = was_up
            self._up = known
        finally:
            self.engine.lock.release()

    async def close(self, reason: str, grace: float = 0.3) -> None:
        """End every stream (at shutdown), dropping those that do not take it in time."""
        for client in self.clients:
            self._end(client, reason)
        deadline = time.monotonic() + grace
        while self._ending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for client in list(self._ending):
            client.abort()

"""The event source: consumes Celery's event exchange and feeds the engine.

One thread, one kombu connection. Bodies are decoded here (JSON only, never pickle),
single events and the batched lists workers send alike; a body that does not decode
is counted and skipped. Connection loss is survived: the thread reconnects with
backoff and reports its health for ``/healthz`` and ``clearly_exporter_broker_up``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from celery import Celery
from celery.events.event import get_exchange
from kombu import Connection, Consumer, Queue

from clearly_exporter import fstransport, redistransport
from clearly_exporter.brokers import redact_url, transport_for, url_passwords
from clearly_exporter.engine import Engine
from clearly_exporter.fstransport import event_queue_name, remove_dead_queues
from clearly_exporter.masking import Masker, secret_values

log = logging.getLogger(__name__)

JSON_TYPES = frozenset({"application/json", "json", None, ""})
#: How often the engine's time-driven rules run, busy or idle: spans of ended attempts
#: leave within this (a drain of 100k tasks ended 0.5 s before its last span at 0.5).
TICK = 0.1
BACKOFF_MAX = 30.0
#: How often a broker that stays unavailable for the same reason is reported again: one
#: warning, then silence, reads like an exporter that gave up (it retries all along).
REMIND_EVERY = 60.0


@dataclass
class BrokerHealth:
    """The consumer's connection state, written by its thread, read by scrapes."""

    connected: bool = False
    reason: str = "not connected yet"
    reconnects: int = 0
    _ever_connected: bool = field(default=False, repr=False)
    #: Monotonic time the connection was lost at; None while connected or never up.
    _lost_at: float | None = field(default=None, repr=False)

    def up(self) -> float | None:
        """Mark connected; return how long it was lost for, None on the first connection."""
        gap = None if self._lost_at is None else time.monotonic() - self._lost_at
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._lost_at = None
        self.connected = True
        self.reason = ""
        return gap

    def down(self, reason: str) -> None:
        if self.connected:
            self._lost_at = time.monotonic()
        self.connected = False
        self.reason = reason


@dataclass(frozen=True)
class SourceConfig:
    url: str
    transport_options: dict
    ssl: dict | bool | None = None
    enable_events_every: float | None = None
    #: A named, durable event queue that outlives the exporter (lossless on AMQP);
    #: None for Celery's own kind: exclusive to this process, auto-deleted.
    event_queue: str | None = None
    queue_ttl: float | None = 5.0
    queue_expires: float | None = 60.0


def queue_lifetimes(
    named: str | None, ttl: float | None, expires: float | None
) -> tuple[float | None, float | None]:
    """Message TTL and queue expiry; None means the default, 0 means none.

    Celery's own event queue keeps messages 5 s and goes 60 s after its consumer; a
    named queue exists to keep events for an absent exporter, so by default it keeps
    them and lives a day unused.
    """
    default_ttl, default_expires = (None, 86_400.0) if named else (5.0, 60.0)
    ttl = default_ttl if ttl is None else ttl
    expires = default_expires if expires is None else expires
    return ttl or None, expires or None


class EventSource(threading.Thread):
    """Consumer thread: broker → decode → engine, reconnecting forever until stopped."""

    def __init__(
        self,
        config: SourceConfig,
        engine: Engine,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="clearly-exporter-source", daemon=True)
        self.config = config
        self.engine = engine
        self.clock = clock
        self.health = BrokerHealth()
        self._stop_event = threading.Event()
        self._last_tick = 0.0
        #: The reason is served on /healthz: no password may reach it, however quoted.
        self._mask = Masker(url_passwords(config.url) | secret_values(config.transport_options))
        self._control = Celery(broker=config.url, set_as_current=False).control

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        backoff = 1.0
        since = told = 0.0
        url = redact_url(self.config.url)
        while not self._stop_event.is_set():
            try:
                self._consume()
                backoff = 1.0
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}".replace(self.config.url, "<broker>")
                reason = self._mask(reason).replace("\n", " ")[:300]
                now = time.monotonic()
                if self.health.connected or self.health.reason != reason:
                    log.warning("broker %s unavailable: %s; retrying", url, reason)
                    since = told = now
                elif now - told >= REMIND_EVERY:
                    log.warning(
                        "broker %s still unavailable after %.0fs: %s; retrying every %.0fs",
                        url,
                        now - since,
                        reason,
                        backoff,
                    )
                    told = now
                self.health.down(reason)
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self.health.down("stopped")

    def _wait(self, seconds: float) -> None:
        """Wait out a backoff, the engine's tick still running: spans go on being handed
        over, label waits and worker purges on being decided, while the broker is away."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self._stop_event.wait(min(TICK, left)):
            self._tick_if_due(self.clock())

    def _connection(self) -> Connection:
        return Connection(
            self.config.url,
            transport=transport_for(self.config.url),
            transport_options=self.config.transport_options,
            ssl=self.config.ssl,
            connect_timeout=5,
        )

    def _consume(self) -> None:
        with self._connection() as conn:
            redistransport.lean(conn)  # before any channel is made
            conn.ensure_connection(max_retries=1)
            named = self.config.event_queue
            exchange = get_exchange(conn)
            queue = Queue(
                named or event_queue_name(),
                exchange=exchange,
                routing_key="#",
                auto_delete=not named,
                durable=bool(named),
                message_ttl=self.config.queue_ttl,
                expires=self.config.queue_expires,
            )
            channel = conn.channel()
            if isinstance(channel, fstransport.Channel):
                removed = remove_dead_queues(channel, exchange)
                if removed:
                    log.info("removed the event queues of %d killed exporter(s)", removed)
            with Consumer(channel, queues=[queue], on_message=self._on_message, no_ack=True):
                if isinstance(channel, redistransport.LeanReceive):
                    channel.raw_handlers[queue.name] = self._on_payload
                # Some transports (Redis pub/sub) subscribe on the first drain: do one
                # before saying healthy and before asking workers for a heartbeat.
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.05)
                gap = self.health.up()
                log.info("consuming events from %s", redact_url(self.config.url))
                if gap is not None:
                    # Whatever was published meanwhile is gone unless a queue kept it
                    # (--event-queue): say so, the metrics can only estimate it.
                    log.warning(
                        "reconnected after %.1fs: events published meanwhile are lost unless "
                        "an --event-queue kept them (clearly_exporter_events_lost_total "
                        "estimates how many)",
                        gap,
                    )
                self._wake_workers(conn)
                self._drain(conn)
                if not named:
                    # The filesystem transport keeps bindings forever unless told.
                    with contextlib.suppress(Exception):
                        queue(channel).delete()

    def _drain(self, conn: Connection) -> None:
        last_enable = self._last_tick = self.clock()
        while not self._stop_event.is_set():
            try:
                conn.drain_events(timeout=TICK)
            except TimeoutError:
                pass
            except ValueError:
                # A transport that decodes its own envelope (filesystem: a half-written
                # file) raises here; that message is gone, the connection is fine.
                self.engine.invalid()
            now = self.clock()
            self._tick_if_due(now)
            every = self.config.enable_events_every
            if every is not None and now - last_enable >= every:
                last_enable = now
                self._broadcast(conn, "enable_events")

    def _tick_if_due(self, now: float) -> None:
        """Run the engine's time-driven rules every ``TICK``, busy or idle.

        Called per message too: under a backlog some transports (Redis) never return
        from ``drain_events``, and spans, label waits and purges must not wait for a lull.
        """
        if now - self._last_tick >= TICK:
            self._last_tick = now
            with self.engine.lock:
                self.engine.tick(now)

    def _wake_workers(self, conn: Connection) -> None:
        """Ask workers for a heartbeat now, so they show up without waiting for one."""
        self._broadcast(conn, "heartbeat")
        if self.config.enable_events_every is not None:
            self._broadcast(conn, "enable_events")

    def _broadcast(self, conn: Connection, command: str) -> None:
        self._control.broadcast(command, connection=conn)

    def _on_message(self, message) -> None:
        self._on_body(message.body, message.content_type, self.clock())

    def _on_payload(self, payload: bytes) -> None:
        """A message as Redis delivered it (see ``redistransport``)."""
        now = self.clock()
        try:
            body, content_type = redistransport.unpack(payload)
        except ValueError:
            self.engine.invalid()
            return
        self._on_body(body, content_type, now)

    def _on_body(self, body: bytes | str, content_type: str | None, now: float) -> None:
        """Decode one message body (an event or a worker's batch) and apply it."""
        if content_type not in JSON_TYPES:
            self.engine.invalid()
            return
        try:
            events = orjson.loads(body)
        except (orjson.JSONDecodeError, TypeError):
            self.engine.invalid()
            return
        if events == []:  # a batch of nothing: no sender makes one
            self.engine.invalid()
            return
        try:
            self.engine.ingest(events if isinstance(events, list) else (events,), now)
        except Exception:
            # The engine takes any input (fuzz-tested); should a bug surface anyway, the
            # message is counted and the consumption goes on: it is not a broker failure.
            log.exception("a message the engine could not apply was counted as invalid")
            self.engine.invalid()
        self._tick_if_due(now)

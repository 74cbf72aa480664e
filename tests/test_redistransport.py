"""The lean Redis delivery: payloads as Redis sends them, unpacked as kombu would."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import OrderedDict
from types import SimpleNamespace

import orjson
import pytest
import redis
from celery.events.event import get_exchange
from kombu import Connection, Consumer, Producer, Queue
from kombu.transport import redis as kombu_redis

from clearly_exporter import redistransport
from clearly_exporter.engine import Engine
from clearly_exporter.source import EventSource, SourceConfig
from tests.support import REDIS_URL, wait_for

#: kombu's pub/sub channel for the event exchange, with its default fanout prefix.
EVENT_CHANNEL = "/9.celeryev/task.multi"


def published_payloads(bodies: list[tuple[object, dict]]) -> list[bytes]:
    """What Redis delivers to a subscriber when kombu publishes each body as workers do."""
    client = redis.Redis.from_url(REDIS_URL)
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("/9.celeryev/*")
    wait_for(lambda: sub.get_message(timeout=0.1) is None and sub.subscribed, 5, "subscribed")
    with Connection(REDIS_URL) as conn:
        producer = Producer(conn.channel(), exchange=get_exchange(conn))
        for body, kwargs in bodies:
            producer.publish(body, routing_key="task.multi", **kwargs)
    payloads: list[bytes] = []

    def collected() -> bool:
        message = sub.get_message(timeout=0.1)
        if message is not None:
            payloads.append(message["data"])
        return len(payloads) == len(bodies)

    wait_for(collected, 10, "every payload", every=0)
    sub.close()
    client.close()
    return payloads


def test_unpack_gives_the_body_and_content_type_kombu_published():
    event = {"type": "task-received", "uuid": "é-1", "name": "n", "args": "('ü',)"}
    raw = {"content_type": "application/x-custom", "content_encoding": "binary"}
    payloads = published_payloads(
        [
            ([event, event], {"serializer": "json"}),
            (event, {"serializer": "json"}),
            (b"\x00\xffbinary", raw),
        ]
    )
    unpacked = [redistransport.unpack(p) for p in payloads]
    assert orjson.loads(unpacked[0][0]) == [event, event]
    assert unpacked[0][1] == unpacked[1][1] == "application/json"
    assert orjson.loads(unpacked[1][0]) == event
    assert unpacked[2] == (b"\x00\xffbinary", "application/x-custom")


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"properties": {}}',
        b'{"body": "a", "properties": []}',
        b'{"body": "@@@", "properties": {"body_encoding": "base64"}}',
        b'{"body": "YQ==", "properties": {"body_encoding": "rot13"}}',
        b'{"body": 7, "properties": {}}',
        b'{"body": "a", "content-type": 7, "properties": {}}',
    ],
)
def test_unpack_refuses_anything_but_a_kombu_envelope(payload: bytes):
    with pytest.raises(ValueError, match=r"not a kombu message envelope|unknown body encoding"):
        redistransport.unpack(payload)


def test_only_redis_connections_are_made_lean():
    memory = Connection("memory://")
    redistransport.lean(memory)
    assert not issubclass(memory.transport.Channel, redistransport.LeanReceive)
    sentinel = Connection("sentinel://127.0.0.1:26379/0")
    redistransport.lean(sentinel)
    assert issubclass(sentinel.transport.Channel, kombu_redis.SentinelChannel)
    assert issubclass(sentinel.transport.Channel, redistransport.LeanReceive)


def test_a_queue_without_raw_handler_gets_kombu_messages():
    with Connection(REDIS_URL) as conn:
        redistransport.lean(conn)
        channel = conn.channel()
        assert isinstance(channel, redistransport.LeanReceive)
        queue = Queue(
            f"t.{uuid.uuid4().hex}", exchange=get_exchange(conn), routing_key="#", auto_delete=True
        )
        got = []
        producer = Producer(conn.channel(), exchange=get_exchange(conn))
        with Consumer(channel, queues=[queue], callbacks=[lambda body, m: got.append(body)]):

            def delivered() -> bool:
                producer.publish({"type": "probe"}, routing_key="x", serializer="json")
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.2)
                return bool(got)

            wait_for(delivered, 10, "a kombu delivery", every=0)
        assert got[0] == {"type": "probe"}


def test_malformed_payloads_are_counted_and_the_next_applied():
    def task(uuid: str) -> list[dict]:
        return [{"type": "task-received", "uuid": uuid, "name": "n", "timestamp": time.time()}]

    probe, first, last = published_payloads(
        [(task(uuid), {"serializer": "json"}) for uuid in ("probe", "first", "last")]
    )
    envelope = orjson.loads(probe)
    envelope["properties"]["body_encoding"] = "rot13"
    engine = Engine()
    source = EventSource(SourceConfig(REDIS_URL, {}), engine)
    source.start()
    client = redis.Redis.from_url(REDIS_URL)
    try:

        def bound() -> bool:
            client.publish(EVENT_CHANNEL, probe)
            return engine.task("probe") is not None

        wait_for(bound, 10, "the source subscribed", every=0.2)
        client.publish(EVENT_CHANNEL, first)  # after every probe still on its way
        wait_for(lambda: engine.task("first") is not None, 10, "the first task")
        invalid = engine.events_invalid
        client.publish(EVENT_CHANNEL, b"garbage")
        client.publish(EVENT_CHANNEL, orjson.dumps(envelope))
        client.publish(EVENT_CHANNEL, last)
        wait_for(lambda: engine.task("last") is not None, 10, "the good one after them")
        assert engine.events_invalid == invalid + 2
        assert source.is_alive() and source.health.connected
    finally:
        source.stop()
        source.join(5)
        client.close()


def test_sentinel_compat_mode_keeps_kombus_deduplication():
    """Subscribed on the current and the legacy topic, a message comes twice: kombu's
    Sentinel channel drops the copy, so such channels keep kombu's delivery."""
    (payload,) = published_payloads([([{"type": "worker-heartbeat"}], {"serializer": "json"})])
    channel = object.__new__(redistransport._lean_class(kombu_redis.SentinelChannel))
    channel.sentinel_fanout_compat, channel._seen_fanout_tags = True, OrderedDict()
    channel._legacy_keyprefix_fanout, channel.keyprefix_fanout = "/{db}.", "/9."
    channel._fanout_to_queue = {"celeryev": "events"}
    delivered: list[str] = []
    channel.connection = SimpleNamespace(_deliver=lambda message, queue: delivered.append(queue))
    raw: list[bytes] = []
    channel.raw_handlers["events"] = raw.append
    copies = [
        [b"pmessage", b"*", topic + b"celeryev/task.multi", payload]
        for topic in (b"/9.", b"/{db}.")
    ]
    replies = iter(copies)
    client = SimpleNamespace(parse_response=lambda: next(replies))
    channel._receive_one(client)
    channel._receive_one(client)
    assert delivered == ["events"] and raw == []

"""The live modes' paced publisher, against a real Redis: every message once, in order,
renamed each round, and stopped when told even while it cannot keep up."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
import redis

from tests.bench.loader import bench_module
from tests.support import reachable

live = bench_module("live")
storm = bench_module("storm")

BROKER = "redis://127.0.0.1:6379/7"


@pytest.fixture
def subscriber():
    """A subscriber to the event exchange's topics, as the Redis transport publishes them."""
    if not reachable("127.0.0.1", 6379):
        if os.environ.get("CI") == "true":
            pytest.fail("redis not reachable on 127.0.0.1:6379 (mandatory when CI=true)")
        pytest.skip("redis not reachable on 127.0.0.1:6379")
    client = redis.Redis.from_url(BROKER)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("/7.celeryev*")
    yield pubsub
    pubsub.close()
    client.close()


def bodies(pubsub, count: int, timeout: float = 30.0) -> list[bytes]:
    """The next ``count`` messages' bodies, out of kombu's envelopes."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            envelope = json.loads(message["data"])
            out.append(base64.b64decode(envelope["body"]))
    return out


def expected(built, events: int) -> list[bytes]:
    """The messages a publisher that counted ``events`` sent: round after round, renamed."""
    out: list[bytes] = []
    prefix, counted, round_ = built.spec.id_prefix, 0, 0
    while counted < events:
        for message in built.messages:
            if counted >= events:
                break
            sent = storm.renamed(message, prefix, f"{round_:08x}") if round_ else message
            out.append(sent.body)
            counted += message.events
        round_ += 1
    assert counted == events, "a publisher counts whole messages"
    return out


def test_every_message_goes_once_in_order_and_renamed_each_round(subscriber):
    spec = storm.StormSpec(tasks=30, names=3, workers=2, seed=5, id_prefix=live.PACED_PREFIX)
    built = storm.build_storm(spec)
    # Four rounds a second: batches of a tick each, and at least two rounds to rename.
    publisher = live.PacedPublisher(BROKER, built, rate=built.events * 4)
    publisher.start()
    deadline = time.monotonic() + 30
    while publisher.rounds < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the condition, with its deadline
    publisher.finish()
    assert publisher.rounds >= 2
    want = expected(built, publisher.events)
    assert bodies(subscriber, len(want)) == want
    assert subscriber.get_message(timeout=0.5) is None, "nothing more than it counted"


def test_a_publisher_that_cannot_keep_up_still_stops_when_told(subscriber):
    spec = storm.StormSpec(tasks=30, names=3, workers=2, seed=5, id_prefix=live.PACED_PREFIX)
    publisher = live.PacedPublisher(BROKER, storm.build_storm(spec), rate=1e12)
    publisher.start()
    deadline = time.monotonic() + 30
    while publisher.events < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the condition, with its deadline
    publisher.finish()
    assert not publisher.is_alive()
    assert publisher.behind > 0

"""The stream hub without a server: what the consumer pays, bounds, filters, order."""

from __future__ import annotations

import asyncio

import orjson

from clearly_exporter.api.filters import matcher
from clearly_exporter.api.stream import KEEPALIVE, StreamClient, StreamFilter, StreamHub
from clearly_exporter.engine import Engine
from clearly_exporter.traces.redact import Redactor
from tests.engine.events import (
    T0,
    received,
    retried_with_new_args,
    started,
    succeeded,
    worker_event,
)


class Transport:
    """Enough of an asyncio transport for a client whose connection stays up."""

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        raise AssertionError("not expected")


ALL = StreamFilter(matcher(None), matcher(None))


async def payloads(client: StreamClient) -> list[tuple[str, dict]]:
    """Everything waiting for the client, as its connection would be given it."""
    raw = b""
    while (data := await client.next(0.01)) != KEEPALIVE:
        raw += data
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        event, data = block.split(b"\n")
        out.append((event[7:].decode(), orjson.loads(data[6:])))
    return out


def test_events_before_any_client_are_not_kept_and_the_last_client_unsubscribes():
    async def scenario():
        engine = Engine()
        hub = StreamHub(engine, Redactor())
        engine.handle(received("before", T0), T0)
        client = hub.connect(ALL, Transport())
        engine.handle(received("during", T0), T0)
        await hub.flush()
        hub.disconnect(client)
        engine.handle(started("during", T0 + 1), T0 + 1)
        again = hub.connect(ALL, Transport())
        await hub.flush()
        return [data["uuid"] for _, data in await payloads(client)], await payloads(again)

    seen, later = asyncio.run(scenario())
    assert seen == ["during"]
    assert later == []


def test_filters_choose_tasks_and_workers_and_values_are_redacted():
    async def scenario():
        engine = Engine()
        hub = StreamHub(engine, Redactor())
        only_add = hub.connect(StreamFilter(matcher("ADD"), matcher(".", negate=True)), Transport())
        workers = hub.connect(StreamFilter(matcher(".", True), matcher("w1")), Transport())
        engine.handle(received("a", T0, kwargs="{'token': 's3cret'}"), T0)
        engine.handle(received("b", T0, name="app.mul"), T0)
        engine.handle(worker_event("worker-online", "celery@w1", T0), T0)
        engine.handle(worker_event("worker-online", "celery@w2", T0), T0)
        await hub.flush()
        return await payloads(only_add), await payloads(workers)

    tasks, workers = asyncio.run(scenario())
    assert [(e, d["uuid"], d["kwargs"]) for e, d in tasks] == [
        ("task", "a", "{'token': '[redacted]'}")
    ]
    assert [(e, d["hostname"], d["event"]) for e, d in workers] == [
        ("worker", "celery@w1", "online")
    ]


def test_transitions_keep_the_engine_order_inferred_ones_included():
    async def scenario():
        engine = Engine()
        hub = StreamHub(engine, Redactor())
        client = hub.connect(ALL, Transport())
        engine.handle(succeeded("a", T0 + 2), T0)
        engine.handle(received("a", T0), T0 + 1)
        await hub.flush()
        return await payloads(client)

    assert [(d["state"], d["inferred"]) for _, d in asyncio.run(scenario())] == [
        ("RECEIVED", True),
        ("STARTED", True),
        ("SUCCESS", False),
    ]


def test_a_client_past_its_budget_is_cut_off_with_a_reason():
    async def scenario():
        engine = Engine()
        hub = StreamHub(engine, Redactor(), max_pending=2000)
        slow = hub.connect(ALL, Transport())
        engine.ingest([received(f"t{i}", T0) for i in range(20)], T0)
        await hub.flush()
        return hub, slow, await payloads(slow)

    hub, slow, sent = asyncio.run(scenario())
    assert sent == [("end", {"reason": slow.reason})]
    assert slow.reason.startswith("client too slow: over 1 KiB of events waiting")
    assert (hub.cutoffs, hub.clients) == (1, ())


def test_a_full_inbox_cuts_every_client_instead_of_growing():
    async def scenario():
        engine = Engine()
        hub = StreamHub(engine, Redactor(), max_inbox=5)
        clients = [hub.connect(ALL, Transport()) for _ in range(2)]
        engine.ingest([received(f"t{i}", T0) for i in range(20)], T0)
        await hub.flush()
        return hub, clients

    hub, clients = asyncio.run(scenario())
    assert [c.reason for c in clients] == ["the stream fell behind the event rate; reconnect"] * 2
    assert (hub.cutoffs, hub.clients) == (2, ())


def test_a_retried_task_streams_each_attempt_with_the_args_it_was_sent_with():
    """The next attempt's task-received comes before the retried event it follows."""

    async def scenario():
        engine = Engine()
        hub = StreamHub(engine, Redactor())
        client = hub.connect(ALL, Transport())
        producer, first, second, third = retried_with_new_args()
        first_retried = first.pop()
        for event in [*producer, *first, second[0], first_retried, *second[1:], *third]:
            engine.handle(event, T0)
        await hub.flush()
        return await payloads(client)

    outcomes = [d for _, d in asyncio.run(scenario()) if d["state"] in ("RETRY", "SUCCESS")]
    assert [(d["state"], d["args"]) for d in outcomes] == [
        ("RETRY", "(3,)"),
        ("RETRY", "(2,)"),
        ("SUCCESS", "(1,)"),
    ]

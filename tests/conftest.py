"""Brokers for integration tests: filesystem always; Redis and RabbitMQ when reachable.

With ``CI=true`` Redis and RabbitMQ are mandatory: an unreachable one fails the run
instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import AMQP_URL, REDIS_URL, reachable

BROKERS = ["filesystem", "redis", "amqp"]


def broker_url(kind: str, tmp_path: Path) -> str:
    if kind == "filesystem":
        folder = tmp_path / "broker"
        folder.mkdir()
        return f"filesystem://{folder}"
    host, port = ("127.0.0.1", 6379) if kind == "redis" else ("127.0.0.1", 5672)
    if not reachable(host, port):
        message = f"{kind} broker not reachable on {host}:{port}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (mandatory when CI=true)")
        pytest.skip(message)
    if kind == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()
        return REDIS_URL
    return AMQP_URL


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL of each kind in turn."""
    return broker_url(request.param, tmp_path)


@pytest.fixture
def queue() -> str:
    """A queue of this test alone, so tests sharing a broker never see each other's tasks."""
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cleanup() -> Iterator[list]:
    """Things with a ``stop()`` to stop at the end of the test, whatever happens."""
    things: list = []
    yield things
    for thing in reversed(things):
        thing.stop()

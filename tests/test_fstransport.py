"""The demo's filesystem transport: whole messages only, and readable by the stock transport."""

from __future__ import annotations

import logging
import queue
import uuid
from pathlib import Path

import pytest
from kombu import Connection

from clearly_exporter.brokers import connection_config
from clearly_exporter.fstransport import PARTIAL, Transport


def connect(folder: Path, transport: type | None) -> Connection:
    """A connection to the broker in ``folder``: the demo's transport, or kombu's with None."""
    url, options = connection_config(f"filesystem://{folder}")
    return Connection(url, transport=transport, transport_options=options)


@pytest.fixture
def name() -> str:
    """A queue name of this test alone.

    kombu keeps the filesystem transport's bindings in one in-process state for all
    folders: a queue bound by an earlier test is not written to this test's folder.
    """
    return f"q{uuid.uuid4().hex[:8]}"


def test_messages_appear_only_under_their_final_name(tmp_path: Path, name: str):
    with connect(tmp_path, Transport) as conn:
        conn.SimpleQueue(name).put({"n": 1})
    files = [path.name for path in (tmp_path / "data").iterdir()]
    assert len(files) == 1
    assert files[0].endswith(f".{name}.msg")


def test_the_stock_transport_reads_what_the_demo_writes(tmp_path: Path, name: str):
    """The exporter reads a demo's folder with kombu's own transport."""
    with connect(tmp_path, None) as reader, connect(tmp_path, Transport) as writer:
        inbox = reader.SimpleQueue(name)
        writer.SimpleQueue(name).put({"n": 1})
        message = inbox.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()


def test_consumers_skip_a_message_still_being_written(tmp_path: Path, name: str):
    with connect(tmp_path, None) as conn:
        inbox = conn.SimpleQueue(name)
        (tmp_path / "data" / f"1_x.{name}.msg{PARTIAL}").write_bytes(b"")
        assert inbox.qsize() == 0
        with pytest.raises(queue.Empty):
            inbox.get(timeout=0.3)


def test_no_host_name_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING), connect(tmp_path, Transport) as conn:
        conn.connect()
    assert "No hostname" not in caplog.text

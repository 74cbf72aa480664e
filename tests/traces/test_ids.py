"""Trace ids are root task uuids; span ids stable and valid."""

import hashlib
import uuid

from clearly_exporter.traces.ids import span_id, trace_id, trace_id_hex


def test_trace_id_of_a_uuid_is_the_uuid():
    task = str(uuid.uuid4())
    assert trace_id_hex(task) == task.replace("-", "")
    assert trace_id(task) == uuid.UUID(task).bytes


def test_non_uuid_ids_get_stable_valid_ids():
    assert trace_id("my-task-1") == trace_id("my-task-1") != trace_id("my-task-2")
    assert len(trace_id("x")) == 16 and any(trace_id("x"))
    assert len(span_id("x", 0, 0)) == 8 and any(span_id("x", 0, 0))


def test_the_nil_uuid_still_gets_a_valid_trace_id():
    assert any(trace_id(str(uuid.UUID(int=0))))


def test_span_ids_differ_per_attempt_and_are_stable():
    ids = {span_id("t", retries, delivery) for retries in range(3) for delivery in range(2)}
    assert len(ids) == 6
    assert span_id("t", 1, 0) == span_id("t", 1, 0)


def test_the_fast_path_agrees_with_uuid_parsing():
    task = str(uuid.uuid4())
    assert trace_id(task.upper()) == trace_id(task) == uuid.UUID(task).bytes
    assert trace_id("{" + task + "}") == uuid.UUID(task).bytes
    spaced = "0123 567-89ab-cdef-0123-456789abcdef"
    assert trace_id(spaced) == hashlib.blake2b(spaced.encode(), digest_size=16).digest()

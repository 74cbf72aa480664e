"""Trace and span ids derived from task ids, so every span of a workflow agrees.

The trace id is the root task's uuid (its 32 hex digits), so a standalone task's trace
id *is* its task id. Ids that are not UUIDs hash to stable valid ids. Ids are bytes,
as OTLP carries them; the API shows the hex form.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache


@lru_cache(maxsize=65536)
def trace_id(root_id: str) -> bytes:
    """The 16-byte trace id of a workflow rooted at task ``root_id`` (never all zero)."""
    try:
        value = uuid.UUID(root_id).bytes
    except ValueError:
        value = hashlib.blake2b(root_id.encode(), digest_size=16).digest()
    return value if any(value) else (1).to_bytes(16, "big")


def trace_id_hex(root_id: str) -> str:
    return trace_id(root_id).hex()


def span_id(task_id: str, retries: int, delivery: int) -> bytes:
    """A stable 8-byte span id for one attempt: (task, retries, delivery of that retry)."""
    digest = hashlib.blake2b(f"{task_id}/{retries}/{delivery}".encode(), digest_size=8).digest()
    return digest if any(digest) else (1).to_bytes(8, "big")

"""Trace and span ids derived from task ids, so every span of a workflow agrees.

The trace id is the root task's uuid (its 32 hex digits), so a standalone task's trace
id *is* its task id. Ids that are not UUIDs hash to stable valid ids.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache


@lru_cache(maxsize=65536)
def trace_id(root_id: str) -> int:
    """The 128-bit trace id of a workflow rooted at task ``root_id``."""
    try:
        value = uuid.UUID(root_id).int
    except ValueError:
        value = int.from_bytes(hashlib.blake2b(root_id.encode(), digest_size=16).digest(), "big")
    return value or 1


def trace_id_hex(root_id: str) -> str:
    return format(trace_id(root_id), "032x")


def span_id(task_id: str, retries: int, delivery: int) -> int:
    """A stable 64-bit span id for one attempt: (task, retries, delivery of that retry)."""
    digest = hashlib.blake2b(f"{task_id}/{retries}/{delivery}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1

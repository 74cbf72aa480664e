"""Trace and span ids derived from task ids, so every span of a workflow agrees.

The trace id is the root task's uuid (its 32 hex digits), so a standalone task's trace
id *is* its task id. Ids that are not UUIDs hash to stable valid ids. Ids are bytes,
as OTLP carries them; the API shows the hex form.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache


def trace_id(root_id: str) -> bytes:
    """The 16-byte trace id of a workflow rooted at task ``root_id`` (never all zero)."""
    # Celery's ids are canonical uuids: read their hex digits directly, as uuid.UUID
    # would but a tenth of the cost (this runs for every histogram exemplar).
    if len(root_id) == 36 and root_id[8] == root_id[13] == root_id[18] == root_id[23] == "-":
        try:
            value = bytes.fromhex(root_id.replace("-", ""))
        except ValueError:
            value = b""
        if len(value) != 16:  # fromhex skips spaces
            value = _other_id(root_id)
    else:
        value = _other_id(root_id)
    return value if any(value) else (1).to_bytes(16, "big")


@lru_cache(maxsize=4096)
def _other_id(root_id: str) -> bytes:
    try:
        return uuid.UUID(root_id).bytes
    except ValueError:
        return hashlib.blake2b(root_id.encode(), digest_size=16).digest()


def trace_id_hex(root_id: str) -> str:
    return trace_id(root_id).hex()


def span_id(task_id: str, retries: int, delivery: int) -> bytes:
    """A stable 8-byte span id for one attempt: (task, retries, delivery of that retry)."""
    digest = hashlib.blake2b(f"{task_id}/{retries}/{delivery}".encode(), digest_size=8).digest()
    return digest if any(digest) else (1).to_bytes(8, "big")

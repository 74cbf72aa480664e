"""The demo's result backend, apart from its app: the runner passes it to the exporter
without importing the app (which builds itself from the environment at import)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def default_backend(broker: str) -> str | None:
    """Celery's file backend beside a filesystem broker, so the demo needs no server at all."""
    parts = urlsplit(broker)
    if parts.scheme == "filesystem" and parts.path not in ("", "/"):
        return f"file://{os.path.join(parts.path, 'results')}"
    return None

"""Masking of the exporter's own secrets (broker and backend passwords, secret transport
options) in text that leaves the process: log records and health reasons.

Libraries quote URLs and connection settings in their messages at any log level; masking
the known values wherever they appear is what keeps them out, whoever wrote the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Keys whose values are secrets, in transport options and OTLP headers.
SECRET_KEYS = re.compile(r"password|passwd|secret|token|api_?key|authorization", re.IGNORECASE)
MASK = "***"


def secret_values(options: Mapping | Iterable[tuple[str, object]] | None) -> set[str]:
    """String values under secret-looking keys, at any depth (``sentinel_kwargs.password``)."""
    found: set[str] = set()
    items = options.items() if isinstance(options, Mapping) else options or ()
    for key, value in items:
        if isinstance(value, Mapping):
            found |= secret_values(value)
        elif isinstance(value, str) and value and SECRET_KEYS.search(str(key)):
            found.add(value)
    return found


class Masker:
    """Replaces each known secret in a text with ``***``, longest first (one secret may
    contain another)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

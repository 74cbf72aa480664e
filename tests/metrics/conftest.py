"""Fixtures shared by the metrics tests."""

from __future__ import annotations

import pytest

from clearly_exporter.metrics import delta


@pytest.fixture
def compared(monkeypatch) -> list[list]:
    """The keys of each family ``delta`` compares value by value (rather than sending the
    engine's marks), in the order compared."""
    seen: list[list] = []
    real = delta.changes

    def changes(keys, values, before):
        seen.append(keys)
        return real(keys, values, before)

    monkeypatch.setattr(delta, "changes", changes)
    return seen

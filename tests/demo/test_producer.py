"""The producer's own rules; its traffic is checked through the runner's producer role."""

from __future__ import annotations

import threading

import pytest

from clearly_exporter.demo import producer
from clearly_exporter.demo.app import app


def test_chords_are_sent_only_with_a_result_backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(app.conf, "result_backend", "file:///tmp/results")
    assert set(producer.actions()) == set(producer.MIX)
    monkeypatch.setitem(app.conf, "result_backend", None)
    left_out = set(producer.MIX) - set(producer.actions())
    assert sorted(action.__name__ for action in left_out) == ["_chord", "_fan_in"]


@pytest.mark.parametrize("rate", [0, -1.0])
def test_rate_must_be_positive(rate: float):
    with pytest.raises(ValueError, match="rate"):
        producer.run_producer(threading.Event(), rate=rate)

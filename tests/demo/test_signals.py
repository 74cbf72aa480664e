"""Stop requests: signals are counted while routed, and the old handlers come back after."""

from __future__ import annotations

import os
import signal

from clearly_exporter.demo.signals import StopRequest, stop_on_signals


def test_signals_are_counted_then_handlers_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    with stop_on_signals(stop):
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signals == 2
        assert stop.requested
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

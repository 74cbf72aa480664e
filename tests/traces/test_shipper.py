"""The span shipper at its stop deadline: every span counted once, exported or lost."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.resources import Resource

from clearly_exporter.traces.encoding import Encoder
from clearly_exporter.traces.shipper import SpanShipper
from tests.otlp_receiver import MemoryExporter
from tests.support import wait_for
from tests.traces.test_encoding import record


class Held(MemoryExporter):
    """Accepts each request only once the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.release = threading.Event()

    def send(self, request) -> bool:
        self.sending.set()
        self.release.wait(30)
        return super().send(request)


def test_a_batch_still_in_flight_at_the_deadline_is_counted_once():
    exporter = Held()
    shipper = SpanShipper(exporter, Encoder(Resource.create({}).attributes), batch=2)
    for i in range(7):
        shipper.submit(record(i))
    shipper.start()
    assert exporter.sending.wait(10), "a first batch is being sent"
    shipper.stop(time.monotonic() + 0.2)
    assert shipper.dropped["export_error"] == 5, "what was still queued is lost"
    exporter.release.set()
    wait_for(lambda: shipper.exported == 2, 10, "the batch in flight counted as exported")
    shipper._thread.join(10)
    assert shipper.exported + shipper.dropped["export_error"] == 7
    assert len(exporter.snapshot()) == 2

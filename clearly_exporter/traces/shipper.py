"""Shipping finished spans to an OTLP collector on a thread of its own.

The SDK's BatchSpanProcessor reports a full queue only as a log line and a drop on
OpenTelemetry's own meter; an operator must see on ``/metrics`` every span that did
not reach the collector, so this small shipper keeps its own bounded queue and counts
exported spans and drops by reason. Encoding happens here, off the consumer thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from clearly_exporter.traces.encoding import Encoder
from clearly_exporter.traces.exporters import RequestExporter
from clearly_exporter.traces.spans import SpanRecord

log = logging.getLogger(__name__)


class SpanShipper:
    """Bounded queue → batches → exporter. Never blocks the caller."""

    def __init__(
        self,
        exporter: RequestExporter,
        encoder: Encoder,
        max_queue: int = 20_000,
        batch: int = 512,
        interval: float = 1.0,
        on_export: Callable[[], None] | None = None,
    ) -> None:
        self.exporter = exporter
        self.encoder = encoder
        self.max_queue = max_queue
        self.batch = batch
        self.interval = interval
        #: Called after each batch, once its spans are counted (the span process reports).
        self.on_export = on_export
        self.exported = 0
        self.dropped: dict[str, int] = {"queue_full": 0, "export_error": 0}
        self._queue: deque[SpanRecord] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clearly-span-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def full(self) -> bool:
        """Whether a span submitted now would be dropped: then do not even build it."""
        return len(self._queue) >= self.max_queue

    def submit(self, span: SpanRecord) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped["queue_full"] += 1
            return
        self._queue.append(span)
        if len(self._queue) >= self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            while len(self._queue) >= self.batch:
                self._export_batch()
            if self._queue:
                self._export_batch()

    def _export_batch(self) -> None:
        spans = []
        while self._queue and len(spans) < self.batch:
            spans.append(self._queue.popleft())
        try:
            ok = self.exporter.send(self.encoder.encode(spans))
        except Exception as exc:
            log.warning("span export raised: %s", exc)
            ok = False
        if ok:
            self.exported += len(spans)
        else:
            self.dropped["export_error"] += len(spans)
        if self.on_export is not None:
            self.on_export()

    def stop(self, deadline: float) -> None:
        """Flush what is queued until ``deadline`` (a monotonic time), then shut down."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(max(deadline - time.monotonic(), 0))
        while self._queue and time.monotonic() < deadline and not self._thread.is_alive():
            self._export_batch()
        # Taken one by one: a shipper thread still running may take a batch meanwhile,
        # and each span is counted by whoever took it, once.
        left = 0
        while self._queue:
            try:
                self._queue.popleft()
            except IndexError:
                break
            left += 1
        if left:
            self.dropped["export_error"] += left
            log.warning("%d spans not exported before the stop deadline", left)
        self.exporter.shutdown()

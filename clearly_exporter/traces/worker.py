"""Views in, spans out: drafts, backend fetches and the shipper, wherever spans are made.

The same piece runs in the span process (``process``) and, with an exporter given in
code, on the consumer thread (``LocalSpans``). ``SpanQueue`` is what the sink hands
views to, either way.
"""

from __future__ import annotations

from typing import Protocol

from clearly_exporter.results import ResultFetcher
from clearly_exporter.traces.shipper import SpanShipper
from clearly_exporter.traces.spans import AttemptView, SpanSettings, build_draft


class SpanWorker:
    """Owns the shipper and the fetcher of one place where spans are made."""

    def __init__(
        self, settings: SpanSettings, shipper: SpanShipper, fetcher: ResultFetcher | None
    ) -> None:
        self.settings = settings
        self.shipper = shipper
        self.fetcher = fetcher

    def handle(self, view: AttemptView) -> None:
        draft = build_draft(view, self.settings)
        if draft.wants_fetch() and self.fetcher is not None:
            self.fetcher.fetch(draft.task_id, draft, self.shipper.submit)
        else:
            self.shipper.submit(draft.finish())

    def start(self) -> None:
        self.shipper.start()

    def stop(self, deadline: float) -> None:
        """Hand pending fetches over with their cut values, then flush until ``deadline``."""
        if self.fetcher is not None:
            self.fetcher.close()
        self.shipper.stop(deadline)

    def counts(self) -> dict[str, int]:
        """Spans exported and dropped by reason, and fetches by outcome (``fetch_*``)."""
        out = {"exported": self.shipper.exported, **self.shipper.dropped}
        if self.fetcher is not None:
            out.update({f"fetch_{k}": v for k, v in self.fetcher.outcomes.items()})
        return out


class SpanQueue(Protocol):
    """Where the sink hands views of ended attempts; never blocks the consumer."""

    exported: int
    dropped: dict[str, int]
    outcomes: dict[str, int] | None

    def full(self) -> bool:
        """Whether a view submitted now would be dropped: then do not even make it."""

    def refuse(self) -> None:
        """Count one span dropped because the queue was full."""

    def stalled(self) -> bool:
        """Whether nothing takes views now (no process, or a dead one not yet replaced):
        waiting for room would wait in vain."""

    def submit(self, view: AttemptView) -> None: ...

    def tick(self) -> None:
        """Called on the engine's tick: send what waits, check on helpers."""

    def start(self) -> None: ...

    def stop(self, deadline: float) -> None: ...


class LocalSpans:
    """Spans made on the caller's thread: for an exporter given in code (tests, embedding)."""

    def __init__(self, worker: SpanWorker) -> None:
        self.worker = worker

    @property
    def exported(self) -> int:
        return self.worker.shipper.exported

    @property
    def dropped(self) -> dict[str, int]:
        return self.worker.shipper.dropped

    @property
    def outcomes(self) -> dict[str, int] | None:
        return self.worker.fetcher.outcomes if self.worker.fetcher else None

    def full(self) -> bool:
        return self.worker.shipper.full()

    def refuse(self) -> None:
        self.worker.shipper.dropped["queue_full"] += 1

    def stalled(self) -> bool:
        return False

    def submit(self, view: AttemptView) -> None:
        self.worker.handle(view)

    def tick(self) -> None:
        """Nothing waits here: each view became a span when submitted."""

    def start(self) -> None:
        self.worker.start()

    def stop(self, deadline: float) -> None:
        self.worker.stop(deadline)

"""The live view: stream events printed as they come, clearly's ``capture``.

A task's arguments show in the first state seen and in its outcome (with
``params=True``); a late event's state (a task-sent seen after the task started) is
not shown, so a task never seems to go back; a worker shows when its state changes,
or on every heartbeat with ``stats``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from rich.console import Console

from clearly_exporter.client.complete import WholeValues
from clearly_exporter.client.render import (
    STANDARD,
    Display,
    task_block,
    worker_line,
    worker_stats,
)

#: Task uuids remembered as already shown, so their first state is known.
MAX_SEEN = 10_000


class CapturePrinter:
    """Prints ``task`` and ``worker`` events of the stream on a console."""

    def __init__(
        self,
        console: Console,
        display: Display,
        stats: bool = False,
        whole: WholeValues | None = None,
    ) -> None:
        self.console = console
        self.display = display
        self.stats = stats
        #: Takes the values Celery cut whole from the exporter's task view.
        self.whole = whole
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._workers: dict[str, str] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "task":
            self.task(data)
        elif event == "worker":
            self.worker(data)

    def task(self, view: dict[str, Any]) -> None:
        if not view.get("current", True) and view["state"] in STANDARD:
            return  # a late event: the task already went past this state
        uuid = view["uuid"]
        first = uuid not in self._seen
        self._seen[uuid] = None
        self._seen.move_to_end(uuid)
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        if self.whole is not None:
            view = self.whole(view, self.display.values(view["state"], first))
        self.console.print(task_block(view, self.display, self.console.width, first))

    def worker(self, view: dict[str, Any]) -> None:
        hostname = view["hostname"]
        changed = self._workers.get(hostname) != view["state"]
        self._workers[hostname] = view["state"]
        if not (changed or self.stats):
            return
        self.console.print(worker_line(view, view["state"] if changed else "HEARTBEAT"))
        if self.stats:
            self.console.print(worker_stats(view))

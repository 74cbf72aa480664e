"""The live view: stream events printed as they come, clearly's ``capture``.

A task's arguments show in the first state seen and in its outcome (with
``params=True``); a late event's state (a task-sent seen after the task started) is
not shown, so a task never seems to go back; a worker shows when its state changes,
or on every heartbeat with ``stats``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rich.console import Console

from clearly_exporter.client.http import ClientError
from clearly_exporter.client.render import (
    STANDARD,
    Display,
    task_block,
    worker_line,
    worker_stats,
)
from clearly_exporter.reprs import completes, maybe_cut

#: Task uuids remembered as already shown, so their first state is known.
MAX_SEEN = 10_000
#: States whose values the result backend holds: it stores them as a task ends or retries.
STORED = frozenset({"SUCCESS", "FAILURE", "RETRY"})
#: A task view slower than this to answer (a backend hung or slow), or failing, is not
#: asked again for ``PAUSE`` seconds: every line after the one asking waits for it.
SLOW = 1.0
PAUSE = 30.0


class CapturePrinter:
    """Prints ``task`` and ``worker`` events of the stream on a console."""

    def __init__(
        self,
        console: Console,
        display: Display,
        stats: bool = False,
        task_view: Callable[[str], dict[str, Any] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.display = display
        self.stats = stats
        #: Asks the exporter for a task's view (``/api/tasks/<uuid>``), whose cut values
        #: it completes from the result backend; it answers None where the exporter
        #: completes none.
        self.task_view = task_view
        self.clock = clock
        self._asking_from = 0.0
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
        view = self._completed(view, first)
        self.console.print(task_block(view, self.display, self.console.width, first))

    def _completed(self, view: dict[str, Any], first: bool) -> dict[str, Any]:
        """``view`` with the values it shows that Celery cut taken whole from the task
        view, as clearly shows results: one request per such line, and the line as the
        event had it when the view cannot tell more of that same attempt and state."""
        if self.task_view is None or view["state"] not in STORED:
            return view
        shown = self.display.values(view["state"], first)
        cut = [key for key in shown if maybe_cut(view.get(key))]
        if not cut or self.clock() < self._asking_from:
            return view
        asked = self.clock()
        try:
            detail = self.task_view(view["uuid"])
        except ClientError:
            detail = None
        if detail is None or self.clock() - asked > SLOW:
            self._asking_from = self.clock() + PAUSE
        attempt = (view["state"], view.get("retries"))
        if detail is None or (detail.get("state"), detail.get("retries")) != attempt:
            return view  # gone further meanwhile: not this line's values
        still = detail.get("values_cut") or ()
        whole = {
            key: detail[key]
            for key in cut
            if key not in still
            and isinstance(detail.get(key), str)
            and completes(view[key], detail[key])
        }
        return {**view, **whole}

    def worker(self, view: dict[str, Any]) -> None:
        hostname = view["hostname"]
        changed = self._workers.get(hostname) != view["state"]
        self._workers[hostname] = view["state"]
        if not (changed or self.stats):
            return
        self.console.print(worker_line(view, view["state"] if changed else "HEARTBEAT"))
        if self.stats:
            self.console.print(worker_stats(view))

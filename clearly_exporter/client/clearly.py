"""``ClearlyClient``: clearly's REPL API, with its names and arguments, over HTTP.

Each method prints, as clearly's did. A problem (exporter unreachable, bad pattern,
unknown task) is printed as one line; with ``debug=True`` it is raised instead, as a
``ClientError`` (the terminal client relies on that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.text import Text

from clearly_exporter.client.capture import CapturePrinter
from clearly_exporter.client.complete import WholeValues
from clearly_exporter.client.http import DEFAULT_URL, ClientError, Credentials, ExporterApi
from clearly_exporter.client.render import (
    Display,
    stats_lines,
    task_block,
    task_detail,
    worker_line,
    worker_stats,
)

#: The exporter answers a task view within its result fetch's 5 s deadline.
TASK_VIEW_TIMEOUT = 8.0


class ClearlyClient:
    """clearly's client, for a clearly-exporter at ``url``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        console: Console | None = None,
        debug: bool = False,
        credentials: Credentials | None = None,
    ) -> None:
        self.api = ExporterApi(url, credentials=credentials)
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.debug = debug

    def capture_tasks(
        self,
        pattern: str | None = None,
        negate: bool = False,
        params: bool | None = None,
        success: bool = False,
        error: bool = True,
    ) -> None:
        """Show tasks live (no workers) until Ctrl-C."""
        self.capture(pattern, negate, ".", True, params, success, error, stats=False)

    def capture_workers(
        self, pattern: str | None = None, negate: bool = False, stats: bool = False
    ) -> None:
        """Show workers live (no tasks) until Ctrl-C."""
        self.capture(".", True, pattern, negate, False, False, False, stats)

    def capture(
        self,
        pattern: str | None = None,
        negate: bool = False,
        workers: str | None = None,
        negate_workers: bool = False,
        params: bool | None = None,
        success: bool = False,
        error: bool = True,
        stats: bool = False,
    ) -> None:
        """Show every transition and worker change live, in order, until Ctrl-C.

        ``pattern`` filters tasks by name, routing key or uuid, ``workers`` workers
        by hostname (regular expressions, case-insensitive); ``negate*`` keeps what
        does not match. ``params``, ``success``, ``error`` and ``stats`` choose what
        is shown, as in clearly.
        """
        display = Display(params, success, error)
        printer = CapturePrinter(self.console, display, stats, WholeValues(self._task_view))
        with self._errors(), contextlib.suppress(KeyboardInterrupt):
            for event, data in self.api.stream(pattern, negate, workers, negate_workers):
                printer(event, data)

    def _task_view(self, task_uuid: str) -> dict[str, Any] | None:
        """The task view, where the exporter completes values Celery cut (its stream and
        lists say whether it does); within the exporter's own fetch deadline, 5 s."""
        if not self.api.completes_values:
            return None
        return self.api.task(task_uuid, timeout=TASK_VIEW_TIMEOUT)

    def tasks(
        self,
        pattern: str | None = None,
        negate: bool = False,
        state: str | None = None,
        limit: int | None = None,
        reverse: bool = True,
        params: bool | None = None,
        success: bool = False,
        error: bool = True,
    ) -> None:
        """Show stored tasks (most recently updated first unless ``reverse=False``)."""
        with self._errors():
            display = Display(params, success, error)
            whole = WholeValues(self._task_view)
            for view in self.api.tasks(pattern, negate, state, limit, reverse):
                view = whole(view, display.values(view["state"], True))
                self.console.print(task_block(view, display, self.console.width))

    def task(self, task_uuid: str) -> None:
        """Show everything known of one task."""
        with self._errors():
            self.console.print(task_detail(self.api.task(task_uuid), self.console.width))

    def workers(self, pattern: str | None = None, negate: bool = False, stats: bool = True) -> None:
        """Show known workers; ``stats`` adds everything their heartbeats say."""
        with self._errors():
            for view in self.api.workers(pattern, negate, stats):
                self.console.print(worker_line(view))
                if stats:
                    self.console.print(worker_stats(view))

    def stats(self) -> None:
        """Tasks and events processed, tasks and workers stored, events/s and lag."""
        with self._errors():
            for line in stats_lines(self.api.stats()):
                self.console.print(line)

    def seen_tasks(self) -> None:
        """Task names seen."""
        with self._errors():
            for name in self.api.seen_tasks():
                self.console.print(name)

    def reset(self) -> None:
        """Forget finished tasks; in-flight ones stay, and metrics are untouched."""
        with self._errors():
            done = self.api.reset()
            self.console.print(
                f"forgot {done['forgotten']} finished tasks; {done['kept']} in flight kept"
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            if self.debug:
                raise
            self.console.print(Text("error: ", "bold red") + Text(str(exc)))

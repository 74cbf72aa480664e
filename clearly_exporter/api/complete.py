"""A task view's cut values completed from the result backend, as clearly shows them.

Celery cuts the reprs of args, kwargs and results at 1,024 characters in its events.
With ``--backend``, the one-task view (``/api/tasks/<uuid>``, the client's ``task``)
asks the backend for the whole values and waits at most the fetcher's deadline; the
view says where its values come from (``values_source``) and which are still cut
(``values_cut``). Lists and the live stream keep the events' values: a fetch per
listed or streamed task would put the backend's latency on every line (the terminal
client's ``capture`` and ``tasks`` ask this view for the lines that show a cut value).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from clearly_exporter.reprs import CUT_KEYS, cut, maybe_cut
from clearly_exporter.results import ResultFetcher, whole_values

#: Longest value a view shows; longer ones are cut with a marker (redacting parses them).
MAX_VALUE = 1 << 20


class ViewJob:
    """A task view waiting for the backend (a ``results.Job``)."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.view = view
        #: Values Celery may have cut, and those of them the backend completed.
        self.cut = [key for key in CUT_KEYS if maybe_cut(view.get(key))]
        self.whole: list[str] = []

    def complete(self, meta: dict) -> None:
        view = self.view
        sent = {key: view[key] for key in self.cut}
        for key, whole in whole_values(meta, view.get("state"), sent).items():
            view[key] = cut(whole, MAX_VALUE)
            self.whole.append(key)

    def finish(self) -> dict[str, Any]:
        still = [key for key in self.cut if key not in self.whole]
        if not self.cut:
            source = "event"
        elif not still:
            source = "backend"
        else:
            source = "partial" if self.whole else "truncated"
        self.view.update(values_source=source, values_cut=still)
        return self.view


async def completed(fetcher: ResultFetcher | None, view: dict[str, Any]) -> dict[str, Any]:
    """``view`` with its cut values completed where a fetch can, and ``values_source``:
    ``event`` (nothing was cut), ``backend`` (every cut value completed), ``partial`` or
    ``truncated`` (no backend, nothing stored, it failed, or it keeps no args)."""
    job = ViewJob(view)
    if not job.cut or fetcher is None:
        return job.finish()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[dict[str, Any]] = loop.create_future()

    def done(finished: dict[str, Any]) -> None:
        # From a fetch thread, or at once on this one; a stopped loop answers nobody.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_answer, answer, finished)

    fetcher.fetch(view["uuid"], job, done)
    return await answer


def _answer(answer: asyncio.Future, finished: dict[str, Any]) -> None:
    if not answer.done():  # the client went away meanwhile
        answer.set_result(finished)

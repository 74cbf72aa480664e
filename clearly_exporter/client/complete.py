"""Values Celery cut, shown whole in the client's lines, from the exporter's task view.

Celery's events cut args, kwargs and results at 1,024 characters; an exporter with
``--backend`` completes them in its one-task view (``/api/tasks/<uuid>``) but not in its
lists and stream, where a fetch per line would put the backend's latency on every one.
The client asks that view for the lines that show a cut value, as clearly shows results
whole: one request per such line, which every line after it waits for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clearly_exporter.client.http import ClientError
from clearly_exporter.reprs import completes, maybe_cut

#: States whose values the result backend holds: it stores them as a task ends or retries.
STORED = frozenset({"SUCCESS", "FAILURE", "RETRY"})
#: A task view slower than this to answer (a backend hung or slow), or failing, is not
#: asked again for ``PAUSE`` seconds: every line after the one asking waits for it.
SLOW = 1.0
PAUSE = 30.0


class WholeValues:
    """Owns the asking of the task view: when it is left alone after a slow answer."""

    def __init__(
        self,
        task_view: Callable[[str], dict[str, Any] | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Asks the exporter for a task's view; None where the exporter completes none.
        self.task_view = task_view
        self.clock = clock
        self._asking_from = 0.0

    def __call__(self, view: dict[str, Any], shown: tuple[str, ...]) -> dict[str, Any]:
        """``view`` with those of its ``shown`` values that Celery cut taken whole from
        the task view; as it was when the view cannot tell more of that same attempt
        and state."""
        if view.get("state") not in STORED:
            return view
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

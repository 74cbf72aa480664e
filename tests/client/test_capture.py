"""The live view's lines: a value Celery cut is shown whole when the exporter's task
view has it, for the values the display shows."""

from __future__ import annotations

import io

from rich.console import Console

from clearly_exporter.client.capture import CapturePrinter
from clearly_exporter.client.complete import WholeValues
from clearly_exporter.client.render import Display

WHOLE_ARGS = repr(("a" * 1500,))
CUT_ARGS = WHOLE_ARGS[:1020] + "...', )"


def line(**values: object) -> dict:
    base = {"uuid": "a", "name": "t", "state": "FAILURE", "timestamp": 0.0, "current": True}
    return {**base, "retries": 0, "args": CUT_ARGS, "kwargs": "{}", "result": None, **values}


def test_a_failure_s_cut_args_are_shown_whole_as_the_default_display_shows_them():
    asked = []

    def task_view(uuid: str) -> dict:
        asked.append(uuid)
        return line(args=WHOLE_ARGS, values_cut=[])

    out = io.StringIO()
    printer = CapturePrinter(Console(file=out, width=4000), Display(), whole=WholeValues(task_view))
    printer("task", line())
    printer("task", line(uuid="b", state="STARTED"))
    assert WHOLE_ARGS in out.getvalue() and asked == ["a"], "a STARTED line shows no args"

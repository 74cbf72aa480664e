"""The live view's lines: a value Celery cut is shown whole when the exporter's task
view has it whole for the same state, and as the event had it otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from clearly_exporter.client import ClientError
from clearly_exporter.client.capture import CapturePrinter
from clearly_exporter.client.render import Display

WHOLE = repr("r" * 1500)
CUT = WHOLE[:1020] + "...'"
ARGS = "(1,)"


def line(**values: object) -> dict:
    base = {"uuid": "a", "name": "t", "state": "SUCCESS", "timestamp": 0.0, "current": True}
    return {**base, "args": ARGS, "kwargs": "{}", "result": CUT, **values}


def shown(view: dict, whole) -> str:
    out = io.StringIO()
    printer = CapturePrinter(Console(file=out, width=4000), Display(success=True), whole=whole)
    printer("task", view)
    return out.getvalue()


def test_a_cut_result_is_shown_whole_from_the_task_view():
    asked = []

    def whole(uuid: str) -> dict:
        asked.append(uuid)
        return line(result=WHOLE, values_cut=[])

    assert WHOLE in shown(line(), whole) and asked == ["a"]
    assert shown(line(result="'short'"), whole) and asked == ["a"], "nothing cut, not asked"


def test_the_line_keeps_the_event_s_value_when_the_view_cannot_tell_more():
    def still_cut(uuid: str) -> dict:
        return line(values_cut=["result"])

    def further(uuid: str) -> dict:
        return line(state="FAILURE", result=WHOLE, values_cut=[])

    def another(uuid: str) -> dict:  # its value is not this line's
        return line(result=repr("s" * 1500), values_cut=[])

    def unreachable(uuid: str) -> dict:
        raise ClientError("the exporter went away")

    for whole in (still_cut, further, another, unreachable, lambda uuid: None, None):
        out = shown(line(), whole)
        assert CUT in out and WHOLE not in out, whole

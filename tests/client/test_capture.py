"""The live view's lines: a value Celery cut is shown whole when the exporter's task
view has it whole for the same attempt and state, and as the event had it otherwise;
a slow or failing view is left alone for a while, since every line waits for it."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from rich.console import Console

from clearly_exporter.client import ClearlyClient, ClientError
from clearly_exporter.client.capture import PAUSE, SLOW, CapturePrinter
from clearly_exporter.client.render import Display

WHOLE = repr("r" * 1500)
CUT = WHOLE[:1020] + "...'"
WHOLE_ARGS = repr(("a" * 1500,))
#: What ``capture --success`` shows.
SUCCESS = Display(success=True)
CUT_ARGS = WHOLE_ARGS[:1020] + "...', )"


def line(**values: object) -> dict:
    base = {"uuid": "a", "name": "t", "state": "SUCCESS", "timestamp": 0.0, "current": True}
    return {**base, "retries": 0, "args": "(1,)", "kwargs": "{}", "result": CUT, **values}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def printer(task_view, display: Display = SUCCESS, clock=None) -> CapturePrinter:
    console = Console(file=io.StringIO(), width=4000)
    return CapturePrinter(console, display, task_view=task_view, clock=clock or Clock())


def shown(view: dict, task_view, display: Display = SUCCESS) -> str:
    out = printer(task_view, display)
    out("task", view)
    return out.console.file.getvalue()


def test_a_cut_result_is_shown_whole_from_the_task_view():
    asked = []

    def task_view(uuid: str) -> dict:
        asked.append(uuid)
        return line(result=WHOLE, values_cut=[])

    assert WHOLE in shown(line(), task_view) and asked == ["a"]
    assert "'short'" in shown(line(result="'short'"), task_view) and asked == ["a"], "not cut"


def test_a_failure_s_cut_args_are_shown_whole_as_the_default_display_shows_them():
    def task_view(uuid: str) -> dict:
        return line(state="FAILURE", args=WHOLE_ARGS, result=None, values_cut=[])

    out = shown(line(state="FAILURE", args=CUT_ARGS, result=None), task_view, Display())
    assert WHOLE_ARGS in out and CUT_ARGS not in out


@pytest.mark.parametrize("state", ["RECEIVED", "STARTED"])
def test_a_line_before_the_backend_holds_anything_asks_nothing(state: str):
    def task_view(uuid: str) -> dict:
        raise AssertionError("asked")

    out = shown(line(state=state, args=CUT_ARGS), task_view, Display(params=True))
    assert f" {state} " in out and "args" in out


def test_the_line_keeps_the_event_s_value_when_the_view_cannot_tell_more():
    def views(**values: object) -> Callable[[str], dict]:
        return lambda uuid: line(**{"result": WHOLE, "values_cut": [], **values})

    def unreachable(uuid: str) -> dict:
        raise ClientError("the exporter went away")

    cases = {
        "still cut there": views(values_cut=["result"]),
        "gone further": views(state="FAILURE"),
        "another attempt": views(retries=1),
        "another value": views(result=repr("s" * 1500)),
        "unreachable": unreachable,
        "completes none": lambda uuid: None,
        "no view": None,
    }
    for case, task_view in cases.items():
        out = shown(line(), task_view)
        assert CUT in out and WHOLE not in out, case


@pytest.mark.parametrize("answer", ["slow", "failing"])
def test_a_slow_or_failing_view_is_left_alone_for_a_while(answer: str):
    clock = Clock()
    asked = []

    def task_view(uuid: str) -> dict:
        asked.append(uuid)
        if answer == "failing":
            raise ClientError("timed out")
        clock.now += SLOW + 0.5
        return line(result=WHOLE, values_cut=[])

    out = printer(task_view, clock=clock)
    out("task", line())
    out("task", line(uuid="b"))
    assert asked == ["a"], "the next line does not wait for it"
    clock.now += PAUSE
    out("task", line(uuid="c"))
    assert asked == ["a", "c"]


def test_an_exporter_that_completes_nothing_is_not_asked():
    client = ClearlyClient("http://127.0.0.1:1")  # nothing listens: a request would fail
    client.api.hello = {"version": "0.1.0"}
    assert client._task_view("a") is None
    client.api.hello["completes_values"] = True
    with pytest.raises(ClientError):
        client._task_view("a")

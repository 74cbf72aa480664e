"""Values Celery cut, taken whole from the exporter's task view: only for the same
attempt and state, only a value that starts as the line's does, and a slow or failing
view is left alone for a while, since every line after the asking one waits for it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clearly_exporter.client import ClearlyClient, ClientError
from clearly_exporter.client.complete import PAUSE, SLOW, WholeValues

WHOLE = repr("r" * 1500)
CUT = WHOLE[:1020] + "...'"
SHOWN = ("args", "kwargs", "result")


def line(**values: object) -> dict:
    base = {"uuid": "a", "name": "t", "state": "SUCCESS", "retries": 0}
    return {**base, "args": "(1,)", "kwargs": "{}", "result": CUT, **values}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def whole_of(task_view) -> WholeValues:
    return WholeValues(task_view, Clock())


def test_a_cut_value_shown_is_taken_whole_and_only_then_asked_for():
    asked = []

    def task_view(uuid: str) -> dict:
        asked.append(uuid)
        return line(result=WHOLE, values_cut=[])

    whole = whole_of(task_view)
    assert whole(line(), SHOWN)["result"] == WHOLE and asked == ["a"]
    assert whole(line(), ("args", "kwargs"))["result"] == CUT, "not shown: not asked"
    assert whole(line(result="'short'"), SHOWN)["result"] == "'short'"
    assert asked == ["a"]


@pytest.mark.parametrize("state", ["PENDING", "RECEIVED", "STARTED", None])
def test_a_line_before_the_backend_holds_anything_asks_nothing(state: str | None):
    def task_view(uuid: str) -> dict:
        raise AssertionError("asked")

    assert whole_of(task_view)(line(state=state), SHOWN)["result"] == CUT


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
        "no value": views(result=None),
        "unreachable": unreachable,
        "completes none": lambda uuid: None,
    }
    for case, task_view in cases.items():
        assert whole_of(task_view)(line(), SHOWN)["result"] == CUT, case


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

    whole = WholeValues(task_view, clock)
    whole(line(), SHOWN)
    assert whole(line(uuid="b"), SHOWN)["result"] == CUT
    assert asked == ["a"], "the next line does not wait for it"
    clock.now += PAUSE
    whole(line(uuid="c"), SHOWN)
    assert asked == ["a", "c"]


def test_an_exporter_that_completes_nothing_is_not_asked():
    client = ClearlyClient("http://127.0.0.1:1")  # nothing listens: a request would fail
    assert not client.api.completes_values
    assert client._task_view("a") is None
    client.api.completes_values = True
    with pytest.raises(ClientError):
        client._task_view("a")

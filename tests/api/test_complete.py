"""A task view's cut values and the result backend: only the values Celery cut, only
by the backend's copy of them, and never a hang."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from clearly_exporter.api.complete import MAX_VALUE, ViewJob, completed
from clearly_exporter.results import ResultFetcher

WHOLE_ARGS = ("x" * 1100,)
CUT_ARGS = repr(WHOLE_ARGS)[:1020] + "...', )"
WHOLE_RESULT = "r" * 2000
CUT_RESULT = repr(WHOLE_RESULT)[:1020] + "...'"


def view(**values: object) -> dict:
    base = {"uuid": "a", "state": "SUCCESS", "args": "()", "kwargs": "{}", "result": None}
    return {**base, **values}


def meta(**values: object) -> dict:
    return {"status": "SUCCESS", "result": WHOLE_RESULT, "args": list(WHOLE_ARGS), **values}


def finished(got: dict, backend: dict) -> dict:
    job = ViewJob(got)
    job.complete(backend)
    return job.finish()


@pytest.fixture
def hung() -> Iterator[ResultFetcher]:
    """A backend that takes connections and never answers, reached by a client with no
    timeout of the fetcher's: only the fetcher's deadline ends a wait on it."""
    server = socket.create_server(("127.0.0.1", 0))
    fetcher = ResultFetcher(f"redis://127.0.0.1:{server.getsockname()[1]}/0", timeout=0.5)
    fetcher.app.conf.redis_socket_timeout = fetcher.app.conf.redis_socket_connect_timeout = 120
    yield fetcher
    fetcher.close()
    server.close()


def test_a_view_with_nothing_cut_is_not_fetched_and_says_so():
    assert asyncio.run(completed(None, view(args="(1,)")))["values_source"] == "event"
    unfetched = asyncio.run(completed(None, view(args=CUT_ARGS)))
    assert unfetched["values_source"] == "truncated" and unfetched["args"] == CUT_ARGS
    assert unfetched["values_cut"] == ["args"]


def test_every_cut_value_completed_is_whole():
    got = finished(view(args=CUT_ARGS, result=CUT_RESULT), meta(kwargs={}))
    assert (got["args"], got["result"]) == (repr(WHOLE_ARGS), repr(WHOLE_RESULT))
    assert got["values_source"] == "backend" and got["values_cut"] == []


def test_args_the_backend_does_not_keep_stay_cut_and_the_view_says_which():
    """Celery's default (no ``result_extended``): the result alone is stored."""
    got = finished(view(args=CUT_ARGS, result=CUT_RESULT), meta(args=None))
    assert got["args"] == CUT_ARGS and got["result"] == repr(WHOLE_RESULT)
    assert got["values_source"] == "partial" and got["values_cut"] == ["args"]


def test_only_what_celery_cut_is_replaced_never_an_app_s_own_mask():
    """``kwargsrepr`` hides a secret in the events; the backend stores the real kwargs."""
    masked = "{'token': '***'}"
    got = finished(view(kwargs=masked, result=CUT_RESULT), meta(kwargs={"token": "s3cr3t"}))
    assert got["kwargs"] == masked and got["result"] == repr(WHOLE_RESULT)


def test_a_value_the_backend_s_copy_does_not_start_as_stays_cut():
    """A retry sent with other args: the backend holds the latest."""
    got = finished(view(args=CUT_ARGS), meta(args=["y" * 1100]))
    assert got["args"] == CUT_ARGS and got["values_source"] == "truncated"


@pytest.mark.parametrize("state", ["RETRY", "FAILURE", "STARTED"])
def test_a_result_comes_only_from_a_success_of_the_view_s_own(state: str):
    """The backend holds the task's latest state: a later success is not this RETRY's."""
    got = finished(view(state=state, result=CUT_RESULT), meta())
    assert got["result"] == CUT_RESULT and got["args"] == "()"


def test_a_huge_value_is_cut_with_a_marker():
    huge = "r" * (MAX_VALUE + 5)
    got = finished(view(result=repr(huge)[:1020] + "...'"), meta(result=huge))
    assert got["result"].endswith("...[cut 7 characters]"), "quotes count"


def test_a_hung_backend_answers_the_view_at_the_deadline_with_the_cut_values(hung):
    began = time.monotonic()
    answered = asyncio.run(asyncio.wait_for(completed(hung, view(args=CUT_ARGS)), 30))
    assert answered["values_source"] == "truncated" and answered["args"] == CUT_ARGS
    assert time.monotonic() - began < 10, "well before the client's own timeout"
    assert hung.outcomes["timeout"] == 1
    again = asyncio.run(completed(hung, view(args=CUT_ARGS)))
    assert again["values_source"] == "truncated" and hung.outcomes["skipped"] == 1


def test_a_view_waiting_when_the_fetcher_closes_is_answered_at_once(hung):
    async def close_while_waiting() -> dict:
        waiting = asyncio.create_task(completed(hung, view(args=CUT_ARGS)))
        await asyncio.sleep(0)  # the view's fetch is asked for, and it waits
        assert not waiting.done()
        hung.close()
        return await asyncio.wait_for(waiting, 0.4)  # under the 0.5 s deadline

    assert asyncio.run(close_while_waiting())["values_source"] == "truncated"
    assert hung.outcomes["skipped"] == 1

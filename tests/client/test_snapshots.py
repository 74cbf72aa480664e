"""Terminal output, compared exactly with snapshots: with colour and without, 100 columns.

Each snapshot is what ``capture --params --success`` prints for a task's transitions,
then what ``task UUID`` prints. Regenerate after a deliberate change with
``UPDATE_SNAPSHOTS=1 pytest tests/client/test_snapshots.py`` and review the diff.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from clearly_exporter.client.capture import CapturePrinter
from clearly_exporter.client.render import Display, task_detail
from tests.client.payloads import CASES

SNAPSHOTS = Path(__file__).parent / "snapshots"
WIDTH = 100


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    """Times print in local time: pin it, so snapshots hold anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def render(case: str, colour: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=WIDTH,
        force_terminal=colour,
        color_system="standard" if colour else None,
        highlight=False,
        legacy_windows=False,
        soft_wrap=True,
    )
    stream, task = CASES[case]()
    printer = CapturePrinter(console, Display(params=True, success=True, error=True))
    for event in stream:
        printer("task", event)
    console.print()
    console.print(task_detail(task, console.width))
    return out.getvalue()


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "plain"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_terminal_output_matches_its_snapshot(case: str, colour: bool):
    path = SNAPSHOTS / f"{case}.{'ansi' if colour else 'plain'}.txt"
    text = render(case, colour)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert text == path.read_text()
    assert ("\x1b[" in text) is colour


def test_plain_output_has_every_value_once_per_shown_state():
    text = render("failure", colour=False)
    assert text.count("error  ValueError(\"card declined: '4242'\")") == 2
    assert text.count("ValueError: card declined: '4242'") == 2

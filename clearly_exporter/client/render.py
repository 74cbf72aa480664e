"""What the client prints: tasks, workers and stats as rich renderables.

Input is the API's JSON, so the same code shows a stored task, a stream transition
and a snapshot test's fixture. States are coloured; values go through ``pretty``;
tracebacks are highlighted as Python tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text

from clearly_exporter.client.pretty import pretty
from clearly_exporter.retries import retry_parts

STATE_STYLES = {
    "PENDING": "blue",
    "RECEIVED": "cyan",
    "STARTED": "yellow",
    "SUCCESS": "bold green",
    "FAILURE": "bold red",
    "RETRY": "bold magenta",
    "REVOKED": "red",
    "REJECTED": "red",
    "ONLINE": "bold green",
    "OFFLINE": "bold red",
    "HEARTBEAT": "green",
}
OUTCOMES = frozenset({"SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED", "CANCELLED"})
#: States along a task's graph; custom ones (PROGRESS, ...) are marks beside it.
STANDARD = OUTCOMES | {"PENDING", "RECEIVED", "STARTED"}
ERRORS = frozenset({"FAILURE", "RETRY"})
#: Width of the state column: the longest standard state name, plus one.
STATE_WIDTH = 10
#: Values are indented under their task line by this much, then labelled.
VALUE_INDENT = 4
LABEL_WIDTH = 7
NO_TIME = "--:--:--.---"


@dataclass(frozen=True)
class Display:
    """clearly's display switches: which values to show with a task."""

    params: bool | None = None
    success: bool = False
    error: bool = True

    def result(self, state: str | None) -> bool:
        return self.success and state == "SUCCESS"

    def failure(self, state: str | None) -> bool:
        return self.error and state in ERRORS

    def arguments(self, state: str | None, first: bool) -> bool:
        """True shows args in a task's first and last states; None follows the others."""
        if self.params is None:
            return self.result(state) or self.failure(state)
        return self.params and (first or state in OUTCOMES)

    def values(self, state: str | None, first: bool) -> tuple[str, ...]:
        """Which of a task's args, kwargs and result a line of ``state`` shows."""
        shown = ("args", "kwargs") if self.arguments(state, first) else ()
        return shown + (("result",) if self.result(state) else ())


def clock(ts: float | None) -> str:
    """Local time of day with milliseconds, as a terminal log shows it."""
    if ts is None:
        return NO_TIME
    try:
        return datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return NO_TIME  # any producer may send events: a timestamp may be nonsense


def state_text(state: str | None, width: int = STATE_WIDTH) -> Text:
    name = state or "UNKNOWN"
    return Text(name.ljust(width), STATE_STYLES.get(name, "bold"))


def task_line(view: dict[str, Any], inferred: bool = False) -> Text:
    """``time STATE name uuid queue worker``: one task, or one of its transitions."""
    line = Text.assemble(
        (clock(view.get("timestamp")), "dim"),
        " ",
        state_text(view.get("state")),
        (view.get("name") or "?", "bold"),
        " ",
        (view["uuid"], "bright_black"),
    )
    if view.get("routing_key"):
        line.append(" " + view["routing_key"], "cyan")
    if view.get("worker"):
        line.append(" " + view["worker"], "blue")
    if view.get("retries"):
        line.append(f" retries={view['retries']}", "magenta")
    if inferred:
        line.append(" (inferred)", "dim italic")
    return line


def labelled(label: str, text: str, width: int, prefix: str = "") -> Text:
    """``label value`` under a task line, the value laid out to the console width."""
    column = VALUE_INDENT + LABEL_WIDTH + len(prefix)
    return Text.assemble(
        " " * VALUE_INDENT,
        (label.ljust(LABEL_WIDTH - 1), "dim"),
        " ",
        prefix,
        pretty(text, column, width),
    )


def error_line(exception: str, width: int) -> Text:
    """An exception under its task; a retry's as Celery logs it, its reason laid out."""
    parts = retry_parts(exception)
    if parts is None:
        return labelled("error", exception, width)
    head, reason = parts
    if reason is None:
        return labelled("error", "", width, head)
    return labelled("error", reason, width, f"{head}: ")


def traceback(text: str) -> Text:
    """A Python traceback highlighted, indented under its task (terminal colours only)."""
    code = text.rstrip()
    highlighted = Syntax(code, "pytb", theme="ansi_dark").highlight(code)
    highlighted.rstrip()
    indent = Text(" " * VALUE_INDENT)
    return Text("\n").join(indent + line for line in highlighted.split("\n"))


def task_values(
    view: dict[str, Any], display: Display, width: int, first: bool = True
) -> Iterator[RenderableType]:
    """The values ``display`` asks for: arguments, result, exception and traceback."""
    state = view.get("state")
    shown = display.values(state, first)
    if "args" in shown:
        yield labelled("args", view.get("args") or "()", width)
        yield labelled("kwargs", view.get("kwargs") or "{}", width)
    if "result" in shown and view.get("result") is not None:
        yield labelled("result", view["result"], width)
    if display.failure(state):
        if view.get("exception"):
            yield error_line(view["exception"], width)
        if view.get("traceback"):
            yield traceback(view["traceback"])


def task_block(
    view: dict[str, Any], display: Display, width: int, first: bool = True
) -> RenderableType:
    """A task line and the values ``display`` asks for below it."""
    return Group(
        task_line(view, view.get("inferred", False)), *task_values(view, display, width, first)
    )


def values_source(view: dict[str, Any]) -> str | None:
    """Where a task view's values come from, unless all as the events carried them."""
    source = view.get("values_source")
    still = ", ".join(view.get("values_cut") or ())
    if source == "backend":
        return "whole, from the result backend (Celery's events cut them)"
    if source == "partial":
        return (
            f"{still} cut by Celery at 1024 characters (the result backend keeps args and "
            "kwargs where the app sets result_extended=True); the rest whole, from it"
        )
    if source == "truncated":
        return (
            f"{still} cut by Celery at 1024 characters; no result backend gave them whole "
            "(the exporter's --backend)"
        )
    return None


def task_detail(view: dict[str, Any], width: int) -> RenderableType:
    """Everything the API knows of one task: fields, each attempt's states, values."""
    head = Text.assemble(
        (view.get("name") or "?", "bold"),
        " ",
        (view["uuid"], "bright_black"),
        " ",
        state_text(view.get("state"), 0),
    )
    parts: list[RenderableType] = [head]
    for label, key in (
        ("queue", "queue"),
        ("routing", "routing_key"),
        ("worker", "worker"),
        ("root", "root_id"),
        ("parent", "parent_id"),
        ("trace", "trace_id"),
        ("eta", "eta"),
        ("expires", "expires"),
    ):
        if view.get(key):
            parts.append(Text.assemble("  ", (label.ljust(9), "dim"), str(view[key])))
    if view.get("children"):
        children = ", ".join(view["children"])
        parts.append(Text.assemble("  ", ("children".ljust(9), "dim"), children))
    for att in view.get("attempts", ()):
        parts.extend(_attempt(att, width))
    source = values_source(view)
    if source is not None:
        parts.append(Text.assemble("  ", ("values".ljust(9), "dim"), (source, "dim italic")))
    parts.append(labelled("args", view.get("args") or "()", width))
    parts.append(labelled("kwargs", view.get("kwargs") or "{}", width))
    if view.get("result") is not None:
        parts.append(labelled("result", view["result"], width))
    return Group(*parts)


def _attempt(att: dict[str, Any], width: int) -> Iterator[RenderableType]:
    head = Text.assemble(("  attempt ", "dim"), (str(att["retries"]), "bold"))
    if att.get("worker"):
        head.append(" on " + att["worker"], "blue")
    if att.get("runtime") is not None:
        head.append(f" runtime {att['runtime']:.3f}s", "dim")
    yield head
    for reached in att["states"]:
        line = Text.assemble(
            "    ", (clock(reached["timestamp"]), "dim"), " ", state_text(reached["state"], 0)
        )
        if reached["inferred"]:
            line.append(" (inferred)", "dim italic")
        yield line
    if att.get("exception"):
        yield error_line(att["exception"], width)
    if att.get("traceback"):
        yield traceback(att["traceback"])


def worker_line(view: dict[str, Any], live: str | None = None) -> Text:
    """``STATE hostname version active processed load``; live, ``time LABEL ...``."""
    line = Text()
    if live is not None:
        line.append(clock(view.get("timestamp")), "dim")
        line.append(" ")
        line.append_text(state_text(live))
    else:
        line.append_text(state_text(view["state"], 8))
    line.append(view["hostname"], "bold")
    if view.get("sw_ver"):
        line.append(" " + view["sw_ver"], "dim")
    if view.get("event") == "timeout":
        line.append(" (no heartbeat)", "red")
    line.append(f" active={view.get('active', 0)} processed={view.get('processed', 0)}")
    if view.get("loadavg"):
        line.append(" load=" + " ".join(f"{v:.2f}" for v in view["loadavg"]), "dim")
    if view.get("heartbeat_age") is not None:
        line.append(f" heartbeat {view['heartbeat_age']:.1f}s ago", "dim")
    return line


def worker_stats(view: dict[str, Any]) -> Text:
    """The rest of what a worker's heartbeats say, for ``stats``."""
    fields = [
        f"{key}={view[key]}"
        for key in ("sw_ident", "sw_sys", "pid", "freq")
        if view.get(key) not in (None, "")
    ]
    return Text("    " + " ".join(fields), "dim")


STATS = (
    ("tasks_processed", "Tasks processed", "{:d}"),
    ("events_processed", "Events processed", "{:d}"),
    ("tasks_stored", "Tasks stored", "{:d}"),
    ("workers_stored", "Workers stored", "{:d}"),
    ("events_per_second", "Events/s", "{:.1f}"),
    ("lag_seconds", "Lag", "{:.3f}s"),
    ("last_event_age", "Last event", "{:.1f}s ago"),
    ("stream_clients", "Stream clients", "{:d}"),
)


def stats_lines(stats: dict[str, Any]) -> Iterator[Text]:
    if stats.get("problem"):
        yield Text.assemble(("Problem".ljust(18), "dim"), (stats["problem"], "bold red"))
    for key, label, fmt in STATS:
        value = stats.get(key)
        shown = "-" if value is None else fmt.format(value)
        yield Text.assemble((label.ljust(18), "dim"), (shown, "bold"))

"""clearly's client verbs (``capture``, ``tasks``, ``task``, ...) against a running exporter."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import click

from clearly_exporter.options import option


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta[f"clearly.{param.name}"] = value


def client_options(func):
    """``--url``, credentials, ``--json`` and ``--debug``, shared by the client verbs.

    Credentials are kept in the click context, not passed to every verb: only
    ``client_call`` uses them.
    """
    func = option("--debug", is_flag=True, default=False, help="On an error, show its traceback.")(
        func
    )
    func = option(
        "--ca-cert",
        default=None,
        expose_value=False,
        callback=_remember,
        help="PEM file of the CA that signed the exporter's certificate (https URLs).",
    )(func)
    func = option(
        "--password",
        default=None,
        expose_value=False,
        callback=_remember,
        show_default=False,
        help="Basic-auth password of an exporter run with --web-config.",
    )(func)
    func = option(
        "--user",
        default=None,
        expose_value=False,
        callback=_remember,
        help="Basic-auth user of an exporter run with --web-config.",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, default=False, help="Print the API's JSON, for scripts."
    )(func)
    func = option("--url", default="http://localhost:9808", help="The exporter to ask.")(func)
    return func


def display_options(func):
    """clearly's display switches: which values to show with each task."""
    func = click.option(
        "--error/--no-error",
        default=True,
        show_default=True,
        help="Show exceptions and tracebacks of failed and retried tasks.",
    )(func)
    func = click.option(
        "--success/--no-success",
        default=False,
        show_default=True,
        help="Show results of successful tasks.",
    )(func)
    func = click.option(
        "--params/--no-params",
        default=None,
        help="Show args and kwargs (in first and last states) [default: with results/errors].",
    )(func)
    return func


def client_call(
    url: str,
    debug: bool,
    as_json: bool,
    show: Callable[[Any], None],
    data: Callable[[Any], object] | None = None,
) -> None:
    """Run a client verb: ``data(api)`` printed as JSON, or ``show(client)`` printed for people.

    Errors are one line (exit status 1) unless ``--debug`` asks for the traceback.
    """
    from rich.console import Console

    from clearly_exporter.client import ClearlyClient, ClientError, Credentials

    meta = click.get_current_context().meta
    credentials = Credentials(
        meta.get("clearly.user"), meta.get("clearly.password"), meta.get("clearly.ca_cert")
    )
    try:
        console = Console(highlight=False, soft_wrap=True)
        client = ClearlyClient(url, console, debug=True, credentials=credentials)
        if as_json and data is not None:
            click.echo(json.dumps(data(client.api), indent=2))
        else:
            show(client)
    except ClientError as exc:
        if debug:
            raise
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option(
    "--tasks",
    "tasks_pattern",
    default=None,
    help="Tasks whose name, routing key or uuid match [default: all; none if only --workers].",
)
@click.option("--negate-tasks", is_flag=True, help="Tasks that do not match instead.")
@click.option(
    "--workers",
    "workers_pattern",
    default=None,
    help="Workers whose hostname matches [default: all; none if only --tasks].",
)
@click.option("--negate-workers", is_flag=True, help="Workers that do not match instead.")
@display_options
@click.option("--stats", is_flag=True, help="Show every worker heartbeat, with all it says.")
@client_options
def capture(
    tasks_pattern: str | None,
    negate_tasks: bool,
    workers_pattern: str | None,
    negate_workers: bool,
    params: bool | None,
    success: bool,
    error: bool,
    stats: bool,
    url: str,
    as_json: bool,
    debug: bool,
) -> None:
    """Show task transitions and worker changes live, in order, until Ctrl-C.

    Patterns are regular expressions, case-insensitive. With --json, one JSON object
    per line, its "type" "task" or "worker".
    """
    if tasks_pattern is None and workers_pattern is not None:
        tasks_pattern, negate_tasks = ".", True
    if workers_pattern is None and tasks_pattern is not None:
        workers_pattern, negate_workers = ".", True

    def show(client) -> None:
        client.capture(
            tasks_pattern,
            negate_tasks,
            workers_pattern,
            negate_workers,
            params,
            success,
            error,
            stats,
        )

    def stream(client) -> None:
        events = client.api.stream(tasks_pattern, negate_tasks, workers_pattern, negate_workers)
        with contextlib.suppress(KeyboardInterrupt):
            for event, data in events:
                click.echo(json.dumps({"type": event, **data}))

    client_call(url, debug, False, stream if as_json else show)


@click.command("tasks")
@click.argument("pattern", required=False)
@click.option("--negate", is_flag=True, help="Tasks that do not match instead.")
@click.option("--state", default=None, help="Only tasks now in this state (e.g. FAILURE).")
@click.option("--limit", type=click.IntRange(0), default=None, help="At most this many tasks.")
@click.option(
    "--reverse/--no-reverse",
    default=True,
    show_default=True,
    help="Most recently updated first.",
)
@display_options
@client_options
def tasks_verb(
    pattern: str | None,
    negate: bool,
    state: str | None,
    limit: int | None,
    reverse: bool,
    params: bool | None,
    success: bool,
    error: bool,
    url: str,
    as_json: bool,
    debug: bool,
) -> None:
    """Stored tasks whose name, routing key or uuid match PATTERN (a regex)."""
    args = (pattern, negate, state, limit, reverse)
    client_call(
        url,
        debug,
        as_json,
        lambda client: client.tasks(*args, params, success, error),
        lambda api: api.tasks(*args),
    )


@click.command("task")
@click.argument("uuid")
@client_options
def task_verb(uuid: str, url: str, as_json: bool, debug: bool) -> None:
    """Everything known of one task: its states, values, workflow and trace id."""
    client_call(url, debug, as_json, lambda client: client.task(uuid), lambda api: api.task(uuid))


@click.command("workers")
@click.argument("pattern", required=False)
@click.option("--negate", is_flag=True, help="Workers that do not match instead.")
@click.option(
    "--stats/--no-stats", default=True, show_default=True, help="Everything heartbeats say."
)
@client_options
def workers_verb(
    pattern: str | None, negate: bool, stats: bool, url: str, as_json: bool, debug: bool
) -> None:
    """Known workers whose hostname matches PATTERN (a regex)."""
    client_call(
        url,
        debug,
        as_json,
        lambda client: client.workers(pattern, negate, stats),
        lambda api: api.workers(pattern, negate, stats),
    )


@click.command("stats")
@client_options
def stats_verb(url: str, as_json: bool, debug: bool) -> None:
    """Tasks and events processed, tasks and workers stored, events/s and lag."""
    client_call(url, debug, as_json, lambda client: client.stats(), lambda api: api.stats())


@click.command("seen-tasks")
@client_options
def seen_tasks_verb(url: str, as_json: bool, debug: bool) -> None:
    """Task names seen."""
    client_call(
        url, debug, as_json, lambda client: client.seen_tasks(), lambda api: api.seen_tasks()
    )


@click.command("reset")
@client_options
def reset_verb(url: str, as_json: bool, debug: bool) -> None:
    """Forget finished tasks (in-flight ones stay; metrics are never reset)."""
    client_call(url, debug, as_json, lambda client: client.reset(), lambda api: api.reset())


VERBS = (capture, tasks_verb, task_verb, workers_verb, stats_verb, seen_tasks_verb, reset_verb)

"""The command line: ``run`` the exporter, ``demo`` it with no external service, and
clearly's client verbs (``capture``, ``tasks``, ``task``, ...) against a running one.

Every option of ``run`` is also read from ``CLEARLY_EXPORTER_<OPTION>``. User errors
are one line and exit status 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from clearly_exporter import __version__, logs
from clearly_exporter.engine import EngineConfig
from clearly_exporter.options import BrokerURL, Duration, KeyValue, ssl_options
from clearly_exporter.traces.redact import DEFAULT_PATTERNS
from clearly_exporter.traces.tracing import PROTOCOLS, TracingSettings

ENV = "CLEARLY_EXPORTER_"


def option(*decls: str, **kwargs):
    """A click option whose environment variable is ``CLEARLY_EXPORTER_<LONG NAME>``."""
    long = next(d for d in decls if d.startswith("--")).split("/")[0]
    kwargs.setdefault("envvar", ENV + long[2:].replace("-", "_").upper())
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clearly-exporter")
def main() -> None:
    """Real-time Celery monitoring from the Celery event stream: metrics, traces, live view."""


class Pattern(click.ParamType):
    """A regular expression, checked when given."""

    name = "regex"

    def convert(self, value, param, ctx) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            self.fail(f"{value!r} is not a valid regular expression: {exc}", param, ctx)
        return value


def tracing_options(func):
    """Options of the OTLP span pipeline; standard ``OTEL_*`` variables apply too."""
    decorators = [
        option(
            "--otlp-endpoint",
            envvar=[
                ENV + "OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ],
            help="OTLP collector (e.g. http://tempo:4317); spans are exported only when set.",
        ),
        option(
            "--otlp-protocol",
            type=click.Choice(PROTOCOLS),
            default="grpc",
            envvar=[
                ENV + "OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        ),
        option(
            "--otlp-header",
            "otlp_headers",
            type=KeyValue(),
            multiple=True,
            help="Header sent with every export, key=value (repeatable).",
        ),
        option(
            "--otlp-insecure",
            is_flag=True,
            default=None,
            help="gRPC without TLS [default: from the endpoint's scheme].",
        ),
        option("--otlp-timeout", type=Duration(), default="10s", help="Timeout of one export."),
        option(
            "--service-name",
            default="celery",
            envvar=[ENV + "SERVICE_NAME", "OTEL_SERVICE_NAME"],
            help="service.name of the spans.",
        ),
        option(
            "--backend",
            type=str,
            default=None,
            help="Celery result backend URL, to complete values Celery cut at 1024 chars.",
        ),
        option(
            "--redact",
            "redact",
            type=Pattern(),
            multiple=True,
            default=DEFAULT_PATTERNS,
            help="Regex of kwarg names and dict keys whose values are redacted (repeatable).",
        ),
        option(
            "--no-args",
            is_flag=True,
            default=False,
            help="Export no args, kwargs or results at all.",
        ),
        option(
            "--max-attribute-length",
            type=click.IntRange(64),
            default=65536,
            help="Longer values are cut, with a marker.",
        ),
        option(
            "--span-max-age",
            type=Duration(),
            default="1h",
            help="An attempt without an end after this long is exported as incomplete.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def tracing_settings(opts: dict) -> TracingSettings | None:
    if not opts["otlp_endpoint"]:
        return None
    return TracingSettings(
        endpoint=opts["otlp_endpoint"],
        protocol=opts["otlp_protocol"],
        headers={k: str(v) for k, v in opts["otlp_headers"]},
        insecure=opts["otlp_insecure"],
        timeout=opts["otlp_timeout"],
        service_name=opts["service_name"],
        backend=opts["backend"],
        redact=tuple(opts["redact"]),
        with_args=not opts["no_args"],
        max_attribute_length=opts["max_attribute_length"],
        span_max_age=opts["span_max_age"],
    )


def server_options(func):
    func = option("--port", type=click.IntRange(0, 65535), default=9808, help="HTTP port.")(func)
    func = option("--host", default="0.0.0.0", help="Address the HTTP server binds.")(func)
    return func


@main.command()
@option(
    "--broker",
    type=BrokerURL(),
    required=True,
    help="Celery broker URL (redis://, amqp://, filesystem:///dir, ...).",
)
@server_options
@option(
    "--queue",
    "queues",
    multiple=True,
    help="Queue whose depth to watch from the start (repeatable).",
)
@option(
    "--default-queue", default="celery", help="Queue label of tasks whose queue no event names."
)
@option("--max-tasks", type=click.IntRange(1), default=100_000, help="Tasks kept in memory (LRU).")
@option(
    "--max-workers", type=click.IntRange(1), default=10_000, help="Workers kept in memory (LRU)."
)
@option(
    "--max-task-names",
    type=click.IntRange(1),
    default=1_000,
    help='Distinct task names in metrics; more fold into name="other".',
)
@option(
    "--name-wait",
    type=Duration(),
    default="5s",
    help='How long transitions wait for a task\'s name before counting as name="unknown".',
)
@option(
    "--worker-timeout",
    type=Duration(),
    default=None,
    help="Heartbeat silence after which a worker is down [default: 3 x its heartbeat interval].",
)
@option(
    "--worker-purge",
    type=Duration(),
    default="24h",
    help="How long a down worker keeps its series (reading 0) before they go.",
)
@option(
    "--broker-transport-option",
    "transport_options",
    type=KeyValue(),
    multiple=True,
    help="kombu transport option, key=value, JSON values allowed (repeatable).",
)
@option(
    "--broker-use-ssl",
    "use_ssl",
    type=KeyValue(),
    multiple=True,
    help="kombu ssl option, key=value, e.g. cert_reqs=CERT_REQUIRED (repeatable).",
)
@option(
    "--enable-events/--no-enable-events",
    default=False,
    help="Periodically ask workers started without -E to send task events.",
)
@option(
    "--event-queue",
    default=None,
    help="Consume a named, durable event queue that keeps events while the exporter is "
    "away (AMQP) [default: an exclusive, auto-deleted queue, as Celery's own].",
)
@option(
    "--event-queue-ttl",
    type=Duration(),
    default=None,
    help="Message TTL of the event queue [default: 5s; none with --event-queue].",
)
@option(
    "--event-queue-expires",
    type=Duration(),
    default=None,
    help="Delete the event queue after this long unused [default: 60s; 1d with --event-queue].",
)
@tracing_options
@option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
)
@option("--log-format", type=click.Choice(["text", "json"]), default="text")
def run(**opts) -> None:
    """Consume a broker's Celery events and serve metrics on /metrics."""
    from clearly_exporter.daemon import Daemon, Settings, run_until_signalled

    logs.setup(opts["log_level"], opts["log_format"])
    settings = Settings(
        broker=opts["broker"],
        host=opts["host"],
        port=opts["port"],
        queues=tuple(opts["queues"]),
        transport_options=dict(opts["transport_options"]),
        ssl=ssl_options(opts["use_ssl"]),
        enable_events_every=10.0 if opts["enable_events"] else None,
        event_queue=opts["event_queue"],
        event_queue_ttl=opts["event_queue_ttl"]
        if opts["event_queue_ttl"] is not None
        else (None if opts["event_queue"] else 5.0),
        event_queue_expires=opts["event_queue_expires"]
        if opts["event_queue_expires"] is not None
        else (86_400.0 if opts["event_queue"] else 60.0),
        engine=EngineConfig(
            max_tasks=opts["max_tasks"],
            max_workers=opts["max_workers"],
            max_task_names=opts["max_task_names"],
            default_queue=opts["default_queue"],
            name_wait=opts["name_wait"],
            worker_timeout=opts["worker_timeout"],
            worker_purge=opts["worker_purge"],
        ),
        tracing=tracing_settings(opts),
        redact=tuple(opts["redact"]),
    )
    daemon = Daemon(settings)
    try:
        run_until_signalled(daemon)
    except OSError as exc:
        raise click.UsageError(
            f"cannot serve on {settings.host}:{settings.port} ({exc.strerror or exc}); "
            "choose another --host/--port"
        ) from None


@main.command()
@option(
    "--broker",
    type=BrokerURL(),
    default=None,
    help="Broker for the demo [default: a fresh filesystem broker in a temporary folder].",
)
@server_options
@option(
    "--role",
    type=click.Choice(["worker", "producer"]),
    default=None,
    help="Run one piece alone [default: everything].",
)
@option("--workers", type=click.IntRange(1, 16), default=2, help="Worker processes to start.")
def demo(broker: str | None, host: str, port: int, role: str | None, workers: int) -> None:
    """Run a demo cluster (workers, producer, exporter) and watch it on /metrics."""
    from clearly_exporter.demo.runner import run_demo

    logging.basicConfig(level=logging.WARNING)
    sys.exit(run_demo(broker=broker, role=role, host=host, port=port, workers=workers))


def client_options(func):
    """``--url``, ``--json`` and ``--debug``, shared by the client verbs."""
    func = option("--debug", is_flag=True, default=False, help="On an error, show its traceback.")(
        func
    )
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

    from clearly_exporter.client import ClearlyClient, ClientError

    try:
        client = ClearlyClient(url, Console(highlight=False, soft_wrap=True), debug=True)
        if as_json and data is not None:
            click.echo(json.dumps(data(client.api), indent=2))
        else:
            show(client)
    except ClientError as exc:
        if debug:
            raise
        raise click.ClickException(str(exc)) from None


@main.command()
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


@main.command("tasks")
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


@main.command("task")
@click.argument("uuid")
@client_options
def task_verb(uuid: str, url: str, as_json: bool, debug: bool) -> None:
    """Everything known of one task: its states, values, workflow and trace id."""
    client_call(url, debug, as_json, lambda client: client.task(uuid), lambda api: api.task(uuid))


@main.command("workers")
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


@main.command("stats")
@client_options
def stats_verb(url: str, as_json: bool, debug: bool) -> None:
    """Tasks and events processed, tasks and workers stored, events/s and lag."""
    client_call(url, debug, as_json, lambda client: client.stats(), lambda api: api.stats())


@main.command("seen-tasks")
@client_options
def seen_tasks_verb(url: str, as_json: bool, debug: bool) -> None:
    """Task names seen."""
    client_call(
        url, debug, as_json, lambda client: client.seen_tasks(), lambda api: api.seen_tasks()
    )


@main.command("reset")
@client_options
def reset_verb(url: str, as_json: bool, debug: bool) -> None:
    """Forget finished tasks (in-flight ones stay; metrics are never reset)."""
    client_call(url, debug, as_json, lambda client: client.reset(), lambda api: api.reset())

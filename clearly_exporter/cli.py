"""The command line: ``run`` the exporter, ``demo`` it with no external service, and
clearly's client verbs (``capture``, ``tasks``, ``task``, ...) against a running one.

Every option of ``run`` is also read from ``CLEARLY_EXPORTER_<OPTION>``. User errors
are one line and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

import click

from clearly_exporter import __version__, logs
from clearly_exporter.brokers import BrokerURLError, check_password_encoding, url_passwords
from clearly_exporter.client.verbs import VERBS
from clearly_exporter.engine import EngineConfig
from clearly_exporter.masking import secret_values
from clearly_exporter.options import BrokerURL, Duration, KeyValue, option, ssl_options
from clearly_exporter.traces.options import tracing_options, tracing_settings
from clearly_exporter.webconfig import WebConfig, WebConfigError
from clearly_exporter.webconfig import load as load_web_config


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clearly-exporter")
def main() -> None:
    """Real-time Celery monitoring from the Celery event stream: metrics, traces, live view."""


def server_options(func):
    func = option("--port", type=click.IntRange(0, 65535), default=9808, help="HTTP port.")(func)
    func = option("--host", default="0.0.0.0", help="Address the HTTP server binds.")(func)
    return func


class RunError(click.ClickException):
    """A user error found on the way (a port in use): one line, without the usage text a
    bad option gets, and exit status 2 all the same."""

    exit_code = 2


def cannot_serve(host: str, port: int, exc: OSError) -> RunError:
    """Said the same whoever failed to bind: asyncio words its errors its own way."""
    errno = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
    reason = os.strerror(errno) if errno else exc.strerror or str(exc)
    return RunError(f"cannot serve on {host}:{port} ({reason}); choose another --host/--port")


def check_port(host: str, port: int) -> None:
    """Fail before the demo starts anything if its exporter could not listen there (it
    would die in its log, its workers and producer already started)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            sock.bind(address)
            sock.listen()
    except OSError as exc:
        raise cannot_serve(host, port, exc) from None


def web_config(path: str | None) -> WebConfig | None:
    """The ``--web-config`` file, checked at start-up: a problem is a one-line usage error."""
    if path is None:
        return None
    try:
        return load_web_config(path)
    except WebConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--web-config'") from None


def known_secrets(opts: dict) -> set[str]:
    """Every secret of the command line, for the logs to mask: whatever library quotes a
    URL or a connection setting in a message, the password does not get written."""
    backend = opts["backend"]
    if backend:
        try:
            check_password_encoding(backend, "backend URL")
        except BrokerURLError as exc:
            raise click.BadParameter(str(exc), param_hint="'--backend'") from None
    found = url_passwords(opts["broker"]) | url_passwords(backend)
    for pairs in (opts["transport_options"], opts["use_ssl"], opts["otlp_headers"]):
        found |= secret_values(pairs)
    return found


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
    help="Message TTL of the event queue, 0 for none [default: 5s; none with --event-queue].",
)
@option(
    "--event-queue-expires",
    type=Duration(),
    default=None,
    help="Delete the event queue after this long unused, 0 for never "
    "[default: 60s; 1d with --event-queue].",
)
@option(
    "--backend",
    default=None,
    help="Celery result backend URL: values Celery cut at 1024 chars are completed from it "
    "in spans and in the task view (/api/tasks/UUID).",
)
@tracing_options
@option(
    "--web-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="TLS and basic auth for every endpoint, in the Prometheus exporter-toolkit's "
    "web config format (/healthz stays open).",
)
@option(
    "--api/--no-api",
    default=True,
    help="Serve the JSON API and live stream under /api; off: only /metrics, /healthz and /.",
)
@option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
)
@option("--log-format", type=click.Choice(["text", "json"]), default="text")
def run(**opts) -> None:
    """Consume a broker's Celery events and serve metrics on /metrics."""
    from clearly_exporter.daemon import Daemon, Settings, run_until_signalled
    from clearly_exporter.traces import tracing

    web = web_config(opts["web_config"])  # user errors first, before any side effect
    traced = tracing_settings(opts)
    if traced is not None:
        try:
            tracing.check(traced)
        except tracing.TracingConfigError as exc:
            raise click.UsageError(str(exc)) from None
    logs.setup(opts["log_level"], opts["log_format"], known_secrets(opts))
    settings = Settings(
        broker=opts["broker"],
        host=opts["host"],
        port=opts["port"],
        queues=tuple(opts["queues"]),
        transport_options=dict(opts["transport_options"]),
        ssl=ssl_options(opts["use_ssl"]),
        enable_events_every=10.0 if opts["enable_events"] else None,
        event_queue=opts["event_queue"],
        event_queue_ttl=opts["event_queue_ttl"],
        event_queue_expires=opts["event_queue_expires"],
        engine=EngineConfig(
            max_tasks=opts["max_tasks"],
            max_workers=opts["max_workers"],
            max_task_names=opts["max_task_names"],
            default_queue=opts["default_queue"],
            name_wait=opts["name_wait"],
            worker_timeout=opts["worker_timeout"],
            worker_purge=opts["worker_purge"],
        ),
        tracing=traced,
        backend=opts["backend"],
        redact=tuple(opts["redact"]),
        api=opts["api"],
        web=web,
    )
    daemon = Daemon(settings)
    try:
        run_until_signalled(daemon)
    except OSError as exc:
        raise cannot_serve(settings.host, settings.port, exc) from None


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
    if role is None and port:
        check_port(host, port)
    sys.exit(run_demo(broker=broker, role=role, host=host, port=port, workers=workers))


for verb in VERBS:
    main.add_command(verb)

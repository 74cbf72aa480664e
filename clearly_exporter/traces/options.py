"""The ``run`` options of the span pipeline; standard ``OTEL_*`` variables apply too."""

from __future__ import annotations

import re

import click

from clearly_exporter.options import ENV, Duration, KeyValue, option
from clearly_exporter.traces.redact import DEFAULT_PATTERNS
from clearly_exporter.traces.tracing import PROTOCOLS, TracingSettings


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

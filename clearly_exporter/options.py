"""Command-line building blocks: options with environment variables, value types."""

from __future__ import annotations

import json
import re
import ssl

import click

from clearly_exporter.brokers import BrokerURLError, validate

ENV = "CLEARLY_EXPORTER_"


def option(*decls: str, **kwargs):
    """A click option whose environment variable is ``CLEARLY_EXPORTER_<LONG NAME>``."""
    long = next(d for d in decls if d.startswith("--")).split("/")[0]
    kwargs.setdefault("envvar", ENV + long[2:].replace("-", "_").upper())
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **kwargs)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


class Duration(click.ParamType):
    """Seconds, or a number with a unit: ``500ms``, ``6s``, ``5m``, ``24h``, ``1d``."""

    name = "duration"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration; write e.g. 30, 6s, 500ms, 5m, 24h", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class KeyValue(click.ParamType):
    """``key=value``; the value is read as JSON when it parses (``5``, ``true``, ``{...}``)."""

    name = "key=value"

    def convert(self, value, param, ctx) -> tuple[str, object]:
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not key=value; write e.g. visibility_timeout=3600", param, ctx)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return key.strip(), parsed


class BrokerURL(click.ParamType):
    """A broker URL of a scheme kombu supports."""

    name = "url"

    def convert(self, value, param, ctx) -> str:
        try:
            validate(value)
        except BrokerURLError as exc:
            self.fail(str(exc), param, ctx)
        return value


_SSL_CONSTANTS = {"CERT_NONE", "CERT_OPTIONAL", "CERT_REQUIRED"}


def ssl_options(pairs: tuple[tuple[str, object], ...]) -> dict | None:
    """``--broker-use-ssl`` pairs as kombu's ``ssl`` dict; ``CERT_*`` names become constants."""
    if not pairs:
        return None
    out: dict = {}
    for key, value in pairs:
        if isinstance(value, str) and value in _SSL_CONSTANTS:
            value = getattr(ssl, value)
        out[key] = value
    return out

"""Logging set-up: plain text for terminals, one JSON object a line for collectors.

Every record, the exporter's or a library's, warnings and crashes included, passes one
handler that masks the exporter's secrets before anything is written.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from types import TracebackType

from clearly_exporter.masking import Masker

_PLAIN = logging.Formatter()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields log pipelines index."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class MaskSecrets(logging.Filter):
    """Masks secrets in a record's message and traceback, before any formatter (so JSON
    escaping cannot hide a secret from the mask)."""

    def __init__(self, mask: Masker) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format: logging would print its args unmasked
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info:
            record.exc_text = _PLAIN.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def _log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception goes through the handler too, masked and formatted."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("clearly_exporter").error("thread %s died", name, exc_info=exc_info)


def _log_crash(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """So does an uncaught exception of the main thread (click only catches its own)."""
    logging.getLogger("clearly_exporter").critical("crashed", exc_info=(exc_type, exc, tb))


#: The arguments of the last ``setup``, so a child process can log the same way.
_applied: tuple[str, str, tuple[str, ...]] | None = None


def applied() -> tuple[str, str, tuple[str, ...]] | None:
    return _applied


def setup(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    global _applied
    _applied = (level, fmt, tuple(secrets))
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    mask = Masker(_applied[2])
    if mask:
        handler.addFilter(MaskSecrets(mask))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_death
    sys.excepthook = _log_crash
    if level.upper() != "DEBUG":
        for noisy in ("kombu", "amqp", "celery", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

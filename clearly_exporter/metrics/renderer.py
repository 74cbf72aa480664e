"""The engine's families on ``/metrics``, rendered in a process of their own.

At 1,000 task names a scrape is 370,000 samples, 40 MB: rendering the series that
changed took 50–140 ms of the GIL the event consumer needs, a tenth or more of the
ingest rate at a scrape a second. So the exporter sends a render process only what
changed since the scrape before (``delta``); the process keeps every series and its
rendered blocks, and writes the families into the scrape's body file, whose descriptor
comes with the request. Its own GIL runs on the other core while the consumer goes on.

A scrape can also be sent by the process itself (``stream``): it writes each family to
the client's socket as it renders it (``chunked``), and the exporter hands it the rest of
the body, its own small families, to end it with.

A render process that fails, hangs or dies is given up on, and that scrape rendered in
the exporter's process, as without one (a streamed scrape, already under way, is lost);
a new process is started after ``RETRY_AFTER``, doubling while new ones keep failing.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import clearly_exporter
from clearly_exporter.metrics.bodyfile import body_file, write_all
from clearly_exporter.metrics.chunked import ChunkedBody
from clearly_exporter.metrics.delta import Sent, Series, Update, update
from clearly_exporter.metrics.exposition import (
    OPENMETRICS,
    CachedFamily,
    Collected,
    generate_chunks,
)
from clearly_exporter.metrics.rows import RowsFamily

log = logging.getLogger(__name__)

#: Request: the payload's length and what to do (``FILE``...); descriptors ride along,
#: the payload's file last. Reply: how it went (``FAILED``...) and a length: of what was
#: written, or of the error message that follows.
REQUEST = struct.Struct("!QB")
REPLY = struct.Struct("!BQ")
FAILED = 0
DONE = 1
#: A streamed body the client's socket failed under: its connection must be closed.
CUT = 2
#: Render the changes into the body file (descriptor: the file); the reply is its size.
FILE = 0
#: Render the changes to the client's socket, the rest into a spill file (descriptors:
#: the socket, the spill file), gzipped or not; no reply until the ``TAIL``.
STREAM = 1
STREAM_GZIP = 2
#: The payload is the end of the streamed body: the reply is the bytes spilled.
TAIL = 3
#: Segments of a family's slab (descriptors: the segments), for the process to map: the
#: payload is (family name, cells a row, rows a segment).
SEGMENTS = 4
#: More of a streamed body's families, rendered into it as they come; no reply.
PART = 5
#: Descriptors a request may bring: a segment each, the payload's file.
MAX_FDS = 33
#: A ``SEGMENTS`` request: (family name, cells a row, rows a segment), the descriptors.
Handover = tuple[tuple[str, int, int], list[int]]
#: How long a render may take before its process is given up on: Prometheus's default
#: scrape timeout, after which nobody waits for the answer.
RENDER_TIMEOUT = 10.0
#: Added to the process's niceness: when the CPU is short (a backlog draining, every
#: series changed), the consumer comes first. A drain with a scrape a second kept 0.90× of
#: its rate at this niceness, 0.88× without (median of 6 pairs each, bench/README); under
#: a steady 20k events/s, a scrape took 5–9 ms longer (p50 140–151 against 135–142 ms).
NICENESS = 10
#: After a failure, scrapes are rendered here this long before a new process is tried;
#: doubling up to ``RETRY_MAX`` while new ones fail too.
RETRY_AFTER = 5.0
RETRY_MAX = 300.0
#: Where the package comes from: the process imports the exporter's own code from there,
#: whatever the working directory holds.
PACKAGE_ROOT = Path(clearly_exporter.__file__).resolve().parent.parent


class RenderError(Exception):
    """The render process failed or is gone."""


class RenderProcess:
    """The exporter's end: starts the process, sends it each scrape's changes.

    One scrape at a time talks to it; what was sent is what the process holds, so after
    any failure both start over.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        #: Per family, the keys and values the process holds.
        self._sent: Sent = {}
        #: Per family of rows, how many of its slab's segments the process has mapped.
        self._mapped: dict[str, int] = {}
        self.failures = 0
        self._stopped = False
        #: The scrape under way gave the process the client's socket: from then on, a
        #: failure may have left part of a body on it.
        self._handed = False
        self._retry_at = 0.0
        self._backoff = RETRY_AFTER

    @property
    def pid(self) -> int | None:
        """The render process's, while there is one."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the process now rather than at the first scrape; its imports run while
        the exporter goes on. Without one, scrapes are rendered here."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> bool:
        """A process to render with, started if it is time to; False if there is none."""
        if self._socket is None and not self._stopped and self.clock() >= self._retry_at:
            try:
                self._start()
            except OSError as exc:
                self._failed(f"cannot start it: {exc}")
        return self._socket is not None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    cwd=PACKAGE_ROOT,
                    # Ctrl-C and SIGTERM to the exporter's group are not for it: it exits
                    # when the exporter closes the connection, or dies.
                    start_new_session=True,
                )
            except OSError:
                ours.close()
                raise
        ours.settimeout(RENDER_TIMEOUT)
        self._socket = ours
        self._sent.clear()
        self._mapped.clear()

    def _failed(self, why: object) -> None:
        self._end(0.0)
        if self._stopped:
            return  # stopped under a scrape: no failure of its own
        self.failures += 1
        self._retry_at = self.clock() + self._backoff
        log.warning(
            "the render process failed (%s; %d so far): scrapes are rendered in the "
            "exporter for %.0f s",
            why,
            self.failures,
            self._backoff,
        )
        self._backoff = min(self._backoff * 2, RETRY_MAX)

    def stop(self, timeout: float = 2.0) -> None:
        """End the connection (the process exits on it) and wait for the process; a
        scrape waiting on it renders here, as every scrape after."""
        self._stopped = True
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._lock.acquire(timeout=timeout):
            try:
                self._end(timeout)
            finally:
                self._lock.release()
        elif (process := self._process) is not None:
            process.kill()  # the scrape holding the lock reaps it

    def _end(self, timeout: float) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def scrape(self, registry: Collector, accept: str, fd: int) -> tuple[int, str]:
        """The scrape written at the start of ``fd``; its size and content type."""
        with self._lock:
            try:
                if self._ensure():
                    result = self._scrape(registry, accept, fd)
                    self._backoff = RETRY_AFTER
                    return result
            except (RenderError, OSError) as exc:
                self._failed(exc)
            except BaseException:
                self._end(0.0)  # it may not hold what was sent: start over
                raise
        # Over whatever the process wrote; only the first ``size`` bytes are sent, so a
        # file made ahead keeps its pages.
        os.lseek(fd, 0, os.SEEK_SET)
        chunks, content_type = generate_chunks(registry, accept)
        return write_all(fd, chunks), content_type

    def ready(self) -> bool:
        """Whether a scrape should be streamed: there is a process, or it is time for one
        (read without the lock: ``stream`` renders here if that changed meanwhile)."""
        return self._socket is not None or (not self._stopped and self.clock() >= self._retry_at)

    def stream(
        self, registry: Collector, accept: str, sock: int, spill: int, gzip: bool
    ) -> int | None:
        """The scrape written in chunks (``chunked``) to the client's socket ``sock``,
        and into ``spill`` from where the socket would have blocked; the bytes spilled,
        None if the socket failed (the body is cut short: close the connection).

        By the process; or here, as ``scrape`` does, if there is none or it failed before
        it had the socket. ``RenderError`` if it failed after: part of a body may be out.
        """
        with self._lock:
            self._handed = False
            try:
                if self._ensure():
                    spilled = self._stream(registry, accept, sock, spill, gzip)
                    self._backoff = RETRY_AFTER
                    return spilled
            except (RenderError, OSError) as exc:
                handed = self._handed
                self._failed(exc)
                if handed:
                    raise RenderError(str(exc)) from exc
            except BaseException:
                self._end(0.0)
                raise
        chunks, _ = generate_chunks(registry, accept)
        body = ChunkedBody(sock, spill, gzip)
        body.write(chunks)
        spilled = body.finish()
        return None if body.cut else spilled

    def _scrape(self, registry: Collector, accept: str, fd: int) -> tuple[int, str]:
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith(OPENMETRICS)
        rest = self._hand_over(registry, openmetrics, FILE, [fd])
        size, _ = self._receive()
        os.lseek(fd, size, os.SEEK_SET)
        return size + write_all(fd, [encoder(Collected(rest))]), content_type  # type: ignore[arg-type]

    def _stream(
        self, registry: Collector, accept: str, sock: int, spill: int, gzip: bool
    ) -> int | None:
        encoder, content_type = choose_encoder(accept)
        kind = STREAM_GZIP if gzip else STREAM
        rest = self._hand_over(registry, content_type.startswith(OPENMETRICS), kind, [sock, spill])
        self._send(TAIL, encoder(Collected(rest)), [])  # type: ignore[arg-type]
        spilled, cut = self._receive()
        return None if cut else spilled

    def _hand_over(
        self, registry: Collector, openmetrics: bool, kind: int, fds: list[int]
    ) -> list[Metric]:
        """Send the engine families' changes as a ``kind`` request with ``fds``; the
        families collected after them, which the process does not render.

        A stream goes a family at a time (the request, then a ``PART`` each), so the
        process renders and sends one while the next is taken from the engine; a body
        file waits for them all (a family marked ``final``, or any other kind of metric).
        """
        streamed = kind != FILE
        payload = _Payload(openmetrics)
        rest: list[Metric] = []
        segments: list[Handover] = []
        sent = done = False

        def flush() -> None:
            """What is gathered goes: the request, or a part of it once it is out."""
            nonlocal payload, segments, sent
            self._request(PART if sent else kind, payload.done(), fds, segments)
            payload, segments, sent = _Payload(openmetrics), [], True

        collected = registry.collect()
        try:
            for metric in collected:
                if isinstance(metric, CachedFamily):
                    if done:
                        raise RenderError(f"{metric.name} came after the request was sent")
                    # Found and pickled while the collector holds the engine lock: the
                    # consumer waits rather than taking turns at the GIL with this for
                    # twice as long.
                    payload.add(update(metric, self._sent))
                    if isinstance(metric, RowsFamily):
                        segments.extend(self._unmapped(metric))
                    if streamed or metric.final:
                        flush()
                        done = metric.final
                    continue
                if not done and (not sent or payload.families):
                    flush()
                done = True
                rest.append(metric)
            if not done and (not sent or payload.families):
                flush()
        finally:
            close = getattr(collected, "close", None)
            if close is not None:
                close()
        return rest

    def _unmapped(self, family: RowsFamily) -> list[Handover]:
        """The family's segments the process has not mapped yet, at most ``MAX_FDS - 1``
        to a request: ((name, cells a row, rows a segment), descriptors)."""
        name, slab = family.name, family.slab
        mapped = self._mapped.get(name, 0)
        files = [segment.file for segment in slab.segments[mapped:]]
        fds = [file.fileno() for file in files if file is not None]
        if len(fds) < len(files):
            raise RenderError(f"{name} is not in shared memory")
        self._mapped[name] = len(slab.segments)
        step, shape = MAX_FDS - 1, (name, slab.width, slab.per_segment)
        return [(shape, fds[i : i + step]) for i in range(0, len(fds), step)]

    def _request(
        self,
        kind: int,
        payload: bytes,
        fds: list[int],
        segments: list[Handover],
    ) -> None:
        """The ``kind`` request, after the segments its families read (each mapped before
        the request is read: one answer each)."""
        for shape, held in segments:
            self._send(SEGMENTS, pickle.dumps(shape), held)
            self._receive()
        self._send(kind, payload, [] if kind == PART else fds)

    def _send(self, kind: int, payload: bytes, fds: list[int]) -> None:
        assert self._socket is not None
        # In a file, written and passed at once: through the socket, it would go a few
        # hundred KB at a time, each waiting for the GIL again behind the consumer.
        with body_file() as request:
            write_all(request.fileno(), [payload])
            header = REQUEST.pack(len(payload), kind)
            sent = socket.send_fds(self._socket, [header], [*fds, request.fileno()])
            self._handed = self._handed or kind in (STREAM, STREAM_GZIP)
            self._socket.sendall(header[sent:])

    def _receive(self) -> tuple[int, bool]:
        """The reply's length, and whether the streamed body was cut."""
        assert self._socket is not None
        status, length = REPLY.unpack(_read(self._socket, REPLY.size))
        if status == FAILED:
            raise RenderError(_read(self._socket, length).decode(errors="replace"))
        return length, status == CUT


class _Payload:
    """A request: the format, then each family's update, pickled one after the other.

    One memo for the whole request, so label strings shared between families go once: an
    object pickled again goes as it was the first time, so nothing added may change until
    the request is sent (all of it is found under the engine lock).
    """

    def __init__(self, openmetrics: bool) -> None:
        self._file = io.BytesIO()
        self._pickler = pickle.Pickler(self._file, pickle.HIGHEST_PROTOCOL)
        self._pickler.dump(openmetrics)
        #: Families added.
        self.families = 0

    def add(self, item: Update) -> None:
        try:
            self._pickler.dump(item)
        except Exception as exc:  # TypeError, PicklingError, RecursionError...
            raise RenderError(f"cannot send the series: {exc!r}") from exc
        self.families += 1

    def done(self) -> bytes:
        return self._file.getvalue()


def _load(payload: bytes) -> tuple[bool, list[Update]]:
    """A request's format and updates, as ``_Payload`` pickled them."""
    stream = io.BytesIO(payload)
    unpickler = pickle.Unpickler(stream)
    openmetrics = unpickler.load()
    updates = []
    while stream.tell() < len(payload):
        updates.append(unpickler.load())
    return openmetrics, updates


def _read(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes; ``RenderError`` if the other end closed first."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise RenderError("the render process is gone")
        data += chunk
    return bytes(data)


class _Server:
    """The render process's side: every series, and the streamed body under way."""

    def __init__(self) -> None:
        self.series = Series()
        #: The body being streamed, its socket and spill file; or why it failed.
        self._body: ChunkedBody | None = None
        self._open: list[int] = []
        self._failure: str | None = None

    def handle(
        self, kind: int, fds: list[int], request: int, length: int
    ) -> tuple[int, int] | None:
        """Do a request (its payload: ``length`` bytes of the file ``request``); the
        reply's status and length, None for no reply yet. A failure of a ``STREAM`` or
        of its ``PART``s is told with the reply to its tail: the exporter reads nothing
        before."""
        if kind in (STREAM, STREAM_GZIP):
            self.close()
            self._open = list(fds)
            fds.clear()  # kept open until the tail
            self._body, self._failure = None, None
            try:
                self._body = ChunkedBody(self._open[0], self._open[1], kind == STREAM_GZIP)
            except Exception as exc:
                self._failure = repr(exc)
            kind = PART
        if kind == PART:
            self._part(os.pread(request, length, 0))
            return None
        payload = os.pread(request, length, 0) if length else b""
        if kind == SEGMENTS:
            name, width, per_segment = pickle.loads(payload)
            self.series.attach(name, width, per_segment, fds)
            return DONE, 0
        if kind == FILE:
            openmetrics, updates = _load(payload)
            return DONE, write_all(fds[0], self.series.render(updates, openmetrics))
        if kind == TAIL:
            body, self._body = self._body, None
            try:
                if self._failure is not None or body is None:
                    raise RenderError(self._failure or "a tail with no body streamed")
                body.write([payload])
                spilled = body.finish()
                return (CUT if body.cut else DONE), spilled
            finally:
                self.close()
        raise RenderError(f"no such request: {kind}")

    def _part(self, payload: bytes) -> None:
        """Render a streamed body's next families into it; a failure is kept for the
        tail (the exporter reads nothing before)."""
        if self._failure is not None:
            return
        if self._body is None:
            self._failure = "a part with no body streamed"
            return
        try:
            openmetrics, updates = _load(payload)
            for family in self.series.families(updates, openmetrics):
                self._body.write(family)
        except Exception as exc:
            self._failure = repr(exc)

    def close(self) -> None:
        for fd in self._open:
            os.close(fd)
        self._open = []


def serve(sock: socket.socket) -> None:
    """The render process: do each request (``_Server``) and answer it, until EOF."""
    server = _Server()
    # What it keeps holds no cycles, and each request unpickles tens of thousands of
    # objects: collections would walk everything kept, ~100 ms a scrape.
    gc.disable()
    try:
        while True:
            header, fds, _, _ = socket.recv_fds(sock, REQUEST.size, MAX_FDS)
            if not header:
                return
            header += _read(sock, REQUEST.size - len(header))
            length, kind = REQUEST.unpack(header)
            *targets, request = fds
            try:
                reply = server.handle(kind, targets, request, length)
            except Exception as exc:  # sent back: the exporter logs it and renders itself
                message = repr(exc).encode()
                sock.sendall(REPLY.pack(FAILED, len(message)) + message)
            else:
                if reply is not None:
                    sock.sendall(REPLY.pack(*reply))
            finally:
                for fd in (*targets, request):
                    os.close(fd)
    finally:
        server.close()


def main() -> None:
    """Entry of ``python -m clearly_exporter.metrics.renderer <socket fd>``."""
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(
            "usage: python -m clearly_exporter.metrics.renderer SOCKET_FD (the exporter starts it)"
        )
    os.nice(NICENESS)
    sock = socket.socket(fileno=int(sys.argv[1]))
    with sock, contextlib.suppress(RenderError, ConnectionError):
        serve(sock)


if __name__ == "__main__":
    main()

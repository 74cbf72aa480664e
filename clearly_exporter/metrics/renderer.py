"""The engine's families on ``/metrics``, rendered in a process of their own.

At 1,000 task names a scrape is 370,000 samples, 40 MB: rendering the series that
changed takes 50–140 ms of the GIL the event consumer needs, a tenth or more of the
ingest rate at a scrape a second. So the exporter sends a render process only what
changed since the scrape before (series appended, values changed, by position); the
process keeps every series and its rendered blocks, and writes the families into the
scrape's body file, whose descriptor comes with the request. Its own GIL runs on the
other core while the consumer goes on.

A render process that fails or dies is replaced at the next scrape; the scrape it failed
is rendered in the exporter's process, as without one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import mmap
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from itertools import compress, count
from operator import is_not

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from clearly_exporter.engine.histogram import frozen
from clearly_exporter.metrics.bodyfile import body_file, write_all
from clearly_exporter.metrics.exposition import (
    OPENMETRICS,
    CachedFamily,
    Caches,
    Collected,
    HistogramFamily,
    Key,
    Spec,
    build,
    generate_chunks,
)

log = logging.getLogger(__name__)

#: A family's change since the last scrape: its spec, whether its series start over
#: (keys no longer a continuation of the ones sent), keys appended, (position, value)
#: of values that changed or are new.
Update = tuple[Spec, bool, list[Key], list[tuple[int, object]]]
#: Series compared at once before looking for the ones that changed, one by one.
STRIDE = 512
#: Request: the payload's length; the body file's descriptor and the payload's file ride
#: along. Reply: ok, length (of the body when ok, of an error message when not).
REQUEST = struct.Struct("!Q")
REPLY = struct.Struct("!?Q")
#: How long a render may take before its process is given up on: Prometheus's default
#: scrape timeout, after which nobody waits for the answer.
RENDER_TIMEOUT = 10.0


class RenderError(Exception):
    """The render process failed or is gone."""


def changes(
    keys: list[Key], values: list, before: tuple[list[Key], list] | None
) -> tuple[bool, list[Key], list[tuple[int, object]]]:
    """What turns ``before`` (keys and values as sent last) into these series."""
    if before is None or len(before[0]) > len(keys) or keys[: len(before[0])] != before[0]:
        return True, keys, list(enumerate(values))
    old_keys, old = before
    n = len(old_keys)
    changed: list[tuple[int, object]] = []
    for start in range(0, n, STRIDE):
        now, then = values[start : start + STRIDE], old[start : start + STRIDE]
        if now != then:
            # By identity: a value the engine did not touch is the same object (a copy
            # of an unchanged histogram too), and an equal one sent again does no harm.
            changed.extend(compress(zip(count(start), now), map(is_not, now, then)))
    changed.extend(enumerate(values[n:], n))
    return False, keys[n:], changed


def update(family: CachedFamily, sent: dict[str, tuple[list[Key], list]]) -> Update:
    """The family's change since ``sent`` (per family, its keys and values as sent last),
    which then holds the family as it is now."""
    keys, values = list(family.rows), list(family.rows.values())
    restart, new, changed = changes(keys, values, sent.get(family.name))
    sent[family.name] = (keys, values)
    if isinstance(family, HistogramFamily):
        changed = [(i, (h.counts, h.total, h.exemplars)) for i, h in changed]
    return family.spec, restart, new, changed


class Series:
    """The render process's copy of every family's series, and their rendered blocks."""

    def __init__(self) -> None:
        self.caches = Caches()
        self._series: dict[str, tuple[list[Key], list]] = {}

    def render(self, updates: list[Update], openmetrics: bool) -> list[bytes]:
        out: list[bytes] = []
        for spec, restart, keys, changed in updates:
            name = spec[1]
            old_keys, old = ([], []) if restart else self._series.get(name, ([], []))
            # New lists: the family's cache keeps the ones it rendered, to compare with.
            values = old + [None] * len(keys)
            if spec[0] == "histogram":
                bounds = spec[5]
                for i, (counts, total, exemplars) in changed:
                    values[i] = frozen(bounds, counts, total, exemplars)
            else:
                for i, value in changed:
                    values[i] = value
            keys = old_keys + keys if keys else old_keys
            self._series[name] = (keys, values)
            build(spec, self.caches).render_series(out, openmetrics, keys, values)
        return out


class RenderProcess:
    """The exporter's end: starts the process, sends it each scrape's changes.

    One scrape at a time talks to it; what was sent is what the process holds, so after
    any failure both start over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        #: Per family, the keys and values the process holds.
        self._sent: dict[str, tuple[list[Key], list]] = {}
        self.failures = 0
        self._stopped = False
        #: A request was sent and its answer not read yet.
        self._waiting = False

    def start(self) -> None:
        """Start the process now rather than at the first scrape; its imports run while
        the exporter goes on."""
        with self._lock:
            if self._socket is None and not self._stopped:
                self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        ours.settimeout(RENDER_TIMEOUT)
        self._socket = ours
        self._sent.clear()

    @property
    def pid(self) -> int | None:
        """The render process's, while there is one."""
        return None if self._process is None else self._process.pid

    def stop(self, timeout: float = 2.0) -> None:
        """End the connection (the process exits on it) and wait for the process; a
        scrape waiting on it renders here, as every scrape after."""
        self._stopped = True
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._end(timeout)

    def _end(self, timeout: float) -> None:
        self._waiting = False
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
                if self._socket is None and not self._stopped:
                    self._start()
                if self._socket is not None:
                    return self._scrape(registry, accept, fd)
            except (RenderError, OSError, pickle.PicklingError) as exc:
                self.failures += 1
                log.warning(
                    "the render process failed (%s, %d so far); rendering here instead",
                    exc,
                    self.failures,
                )
                self._end(0.0)
            except BaseException:
                if self._waiting:  # its answer would be read as the next scrape's
                    self._end(0.0)
                raise
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks, content_type = generate_chunks(registry, accept)
        return write_all(fd, chunks), content_type

    def _scrape(self, registry: Collector, accept: str, fd: int) -> tuple[int, str]:
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith(OPENMETRICS)
        updates: list[Update] = []
        rest: list[Metric] = []
        sent = False
        collected = registry.collect()
        try:
            for metric in collected:
                if isinstance(metric, CachedFamily):
                    # Found while the collector holds the engine lock: the consumer waits
                    # rather than taking turns at the GIL with this for twice as long.
                    updates.append(update(metric, self._sent))
                    continue
                if not sent:
                    self._send(updates, openmetrics, fd)
                    sent = True
                rest.append(metric)
            if not sent:
                self._send(updates, openmetrics, fd)
            size = self._receive()
        finally:
            close = getattr(collected, "close", None)
            if close is not None:
                close()
        os.lseek(fd, size, os.SEEK_SET)
        return size + write_all(fd, [encoder(Collected(rest))]), content_type  # type: ignore[arg-type]

    def _send(self, updates: list[Update], openmetrics: bool, fd: int) -> None:
        payload = pickle.dumps((openmetrics, updates), pickle.HIGHEST_PROTOCOL)
        assert self._socket is not None
        self._waiting = True
        # In a file, written and passed at once: through the socket, it would go a few
        # hundred KB at a time, each waiting for the GIL again behind the consumer.
        with body_file() as request:
            write_all(request.fileno(), [payload])
            socket.send_fds(self._socket, [REQUEST.pack(len(payload))], [fd, request.fileno()])

    def _receive(self) -> int:
        assert self._socket is not None
        ok, length = REPLY.unpack(_read(self._socket, REPLY.size))
        if not ok:
            raise RenderError(_read(self._socket, length).decode(errors="replace"))
        self._waiting = False
        return length


def _read(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes; ``RenderError`` if the other end closed first."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise RenderError("the render process is gone")
        data += chunk
    return bytes(data)


def serve(sock: socket.socket) -> None:
    """The render process: render each request into the file it brings, until EOF."""
    series = Series()
    # What it keeps holds no cycles, and each request unpickles tens of thousands of
    # objects: collections would walk everything kept, ~100 ms a scrape.
    gc.disable()
    while True:
        header, fds, _, _ = socket.recv_fds(sock, REQUEST.size, 2)
        if not header:
            return
        header += _read(sock, REQUEST.size - len(header))
        (length,) = REQUEST.unpack(header)
        fd, request = fds
        try:
            with mmap.mmap(request, length, prot=mmap.PROT_READ) as payload:
                openmetrics, updates = pickle.loads(payload)
            size = write_all(fd, series.render(updates, openmetrics))
        except Exception as exc:  # sent back: the exporter logs it and renders itself
            message = repr(exc).encode()
            sock.sendall(REPLY.pack(False, len(message)) + message)
        else:
            sock.sendall(REPLY.pack(True, size))
        finally:
            os.close(fd)
            os.close(request)


def main() -> None:
    """Entry of ``python -m clearly_exporter.metrics.renderer <socket fd>``."""
    # Ctrl-C and SIGTERM reach the whole process group: the exporter stops, and this
    # process with it when the connection closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    with sock, contextlib.suppress(RenderError, ConnectionError):
        serve(sock)


if __name__ == "__main__":
    main()

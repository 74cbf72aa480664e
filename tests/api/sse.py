"""Test clients of ``/api/stream``: one that reads on a thread, one that stops reading."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from typing import Any

from tests.support import wait_for


def parse(raw: bytes) -> list[tuple[str, Any]]:
    """Every complete ``(event, data)`` in ``raw`` (an HTTP body, chunk framing and all)."""
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        fields = dict(line.split(b": ", 1) for line in lines if line[:5] in (b"event", b"data:"))
        if b"event" in fields and b"data" in fields:
            out.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
    return out


class StreamSocket:
    """A raw HTTP/1.1 connection to the stream; reads only when told to."""

    def __init__(self, base: str, query: str = "", rcvbuf: int | None = None) -> None:
        url = urllib.parse.urlsplit(base)
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((url.hostname, url.port))
        self.sock.sendall(f"GET /api/stream{query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
        self.raw = b""

    def read_until(self, marker: bytes, timeout: float = 10) -> None:
        self.sock.settimeout(timeout)
        while marker not in self.raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"stream closed before {marker!r}")
            self.raw += chunk

    def read_to_end(self, timeout: float = 30) -> bytes:
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(1 << 20):
            self.raw += chunk
        return self.raw

    def stop(self) -> None:
        self.sock.close()


class StreamReader(StreamSocket):
    """A client that keeps reading on a thread, collecting events as they come."""

    def __init__(self, base: str, query: str = "") -> None:
        super().__init__(base, query)
        self.read_until(b"event: hello")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(None)
        try:
            while chunk := self.sock.recv(65536):
                self.raw += chunk
        except OSError:
            pass

    def events(self, kind: str | None = None) -> list[Any]:
        return [data for event, data in parse(self.raw) if kind is None or event == kind]

    def wait(self, condition, what: str, timeout: float = 30) -> Any:
        return wait_for(lambda: condition(self), timeout, what, every=0.05)

"""A scrape's body file: every chunk written, in order, whatever the kernel takes."""

from __future__ import annotations

import os

from clearly_exporter.metrics import bodyfile
from clearly_exporter.metrics.bodyfile import body_file, write_all


def test_short_writes_go_on_where_they_stopped(monkeypatch):
    """A write the kernel cut short (a signal) is carried on, never repeated or lost."""
    real = os.writev

    def short(fd: int, buffers: list) -> int:
        return real(fd, [bytes(b"".join(bytes(b) for b in buffers)[:1000])])

    monkeypatch.setattr(bodyfile.os, "writev", short)
    chunks = [bytes([65 + i % 26]) * (37 * i + 1) for i in range(300)]
    with body_file() as body:
        assert write_all(body.fileno(), chunks) == sum(map(len, chunks))
        body.seek(0)
        assert body.read() == b"".join(chunks)

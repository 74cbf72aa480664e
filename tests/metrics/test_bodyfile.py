"""A scrape's body file: every chunk written, in order, whatever the kernel takes."""

from __future__ import annotations

import gzip
import os

from clearly_exporter.metrics import bodyfile
from clearly_exporter.metrics.bodyfile import BodyFiles, body_file, gzipped, write_all


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


def test_a_file_made_ahead_is_taken_once_with_its_pages_allocated():
    bodies = BodyFiles()
    bodies.make_ahead(1 << 20)
    bodies.make_ahead(3 << 20)
    with bodies.take() as ahead, bodies.take() as new:
        assert os.fstat(ahead.fileno()).st_size == 3 << 20, "the latest file made"
        assert os.fstat(ahead.fileno()).st_blocks * 512 >= 3 << 20, "its pages allocated"
        assert os.fstat(new.fileno()).st_size == 0, "none made ahead any more: a new one"
        assert write_all(ahead.fileno(), [b"x" * 10]) == 10
        ahead.seek(0)
        assert ahead.read(11) == b"x" * 10 + b"\0", "written from its start"


def test_without_memory_to_allocate_no_file_is_made_ahead(monkeypatch):
    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bodyfile.os, "posix_fallocate", full)
    bodies = BodyFiles()
    bodies.make_ahead(1 << 20)
    with bodies.take() as body:
        assert os.fstat(body.fileno()).st_size == 0


def test_once_closed_no_file_made_ahead_is_kept():
    bodies = BodyFiles()
    bodies.make_ahead(1 << 20)
    bodies.close()
    bodies.make_ahead(1 << 20)  # a scrape that ended while the server stopped
    with bodies.take() as body:
        assert os.fstat(body.fileno()).st_size == 0


def test_gzipped_is_the_scrape_alone_of_a_larger_file():
    """A file made ahead is larger than its scrape: what lies past it is not sent."""
    bodies = BodyFiles()
    bodies.make_ahead(1 << 20)
    scrape = b"".join(b'x_total{l="%d"} %d\n' % (i, i * 7) for i in range(20_000))
    with bodies.take() as body:
        write_all(body.fileno(), [scrape])
        packed = gzipped(body.fileno(), len(scrape))
    assert gzip.decompress(packed) == scrape
    assert len(packed) * 4 < len(scrape)


def test_an_empty_scrape_gzips_to_an_empty_stream():
    with body_file() as body:
        assert gzip.decompress(gzipped(body.fileno(), 0)) == b""

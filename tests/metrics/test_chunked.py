"""A body streamed by the render process: HTTP/1.1 chunks, to the client's socket while it
takes them at once, the rest into the spill file, in order, never waiting for the client."""

from __future__ import annotations

import gzip
import os
import socket

from clearly_exporter.metrics.bodyfile import body_file
from clearly_exporter.metrics.chunked import ChunkedBody


def dechunk(data: bytes) -> bytes:
    """The body of chunks as the render process writes them (the last, empty chunk is the
    web server's); fails on anything else."""
    body, at = b"", 0
    while at < len(data):
        line_end = data.index(b"\r\n", at)
        size = int(data[at:line_end], 16)
        assert size > 0, "an empty chunk ends a body"
        start = line_end + 2
        body += data[start : start + size]
        assert data[start + size : start + size + 2] == b"\r\n"
        at = start + size + 2
    return body


def received(sock: socket.socket) -> bytes:
    """Everything the peer wrote, once it has shut its side."""
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    return data


def streamed(pieces: list[list[bytes]], gzipped: bool, reader_gone: bool = False):
    """Write ``pieces`` (a chunk each) to a socket nobody reads yet, with a small buffer;
    what reached it, what was spilled, and the body as it ended."""
    ours, theirs = socket.socketpair()
    with ours, theirs, body_file() as spill:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 10)
        ours.setblocking(False)
        if reader_gone:
            theirs.close()
        body = ChunkedBody(ours.fileno(), spill.fileno(), gzipped)
        for chunk in pieces:
            body.write(chunk)
        spilled = body.finish()
        ours.shutdown(socket.SHUT_WR)
        sent = b"" if reader_gone else received(theirs)
        assert spilled == os.fstat(spill.fileno()).st_size
        return sent, os.pread(spill.fileno(), spilled, 0), body


def test_chunks_go_to_the_socket_while_it_takes_them():
    sent, spill, body = streamed([[b"abc", b"def"], [], [b"", b"g"]], gzipped=False)
    assert sent == b"6\r\nabcdef\r\n1\r\ng\r\n", "one chunk per write, none empty"
    assert spill == b"" and not body.cut


def test_what_the_socket_does_not_take_goes_on_into_the_spill_file_in_order():
    pieces = [[bytes([65 + i]) * 300_000, b"-"] for i in range(8)]
    sent, spill, body = streamed(pieces, gzipped=False)
    assert sent and spill, "the socket took what it could, the file the rest"
    assert not body.cut
    assert dechunk(sent + spill) == b"".join(b"".join(p) for p in pieces)


def test_a_gzipped_body_is_one_gzip_stream_over_the_chunks():
    pieces = [[f"line {i} {j}\n".encode() * 50 for j in range(40)] for i in range(30)]
    sent, spill, _ = streamed(pieces, gzipped=True)
    plain = b"".join(b"".join(p) for p in pieces)
    packed = dechunk(sent + spill)
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) // 10


def test_a_client_gone_cuts_the_body_short_and_nothing_more_is_written():
    """Nothing is spilled for a dead socket, and the body is marked cut: its connection is
    closed rather than ended, so no scraper takes a body with a hole for a whole one."""
    pieces = [[b"x" * 100_000] for _ in range(3)]
    _, spill, body = streamed(pieces, gzipped=True, reader_gone=True)
    assert body.cut and spill == b""

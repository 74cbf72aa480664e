"""A scrape's body sent by the render process itself, in HTTP/1.1 chunks, as it is rendered.

Rendered into a file first, a 40 MB body was then sent by the exporter's event loop:
~35 ms under load after the render's ~60, every write waiting for the GIL behind the
event consumer. Here the render process writes each family to the client's socket as
soon as it is rendered (gzipped first if the scraper asked), so the client reads while
the next family renders.

The render process never waits for a client: what the socket does not take when a
family is written waits to be tried again with the next one, and what it still has not
taken when the body is over (a slow or distant scraper) goes into a spill file, which the
exporter sends as before. One scrape's slow client so never holds up another's render.
A socket that fails (the client gone) ends the writing: the body is ``cut``, and its
connection must be closed rather than ended.
"""

from __future__ import annotations

from isal import isal_zlib

from clearly_exporter.metrics.bodyfile import GZIP_LEVEL, GZIP_WBITS, write_all, write_some


class ChunkedBody:
    """The body of one response with ``Transfer-Encoding: chunked``, but its last chunk
    (the exporter's web server writes that)."""

    def __init__(self, sock: int, spill: int, gzip: bool) -> None:
        self._sock = sock
        self._spill = spill
        self._packer = (
            isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS) if gzip else None
        )
        #: What the socket has not taken yet, in order: pieces framed as chunks.
        self._pending: list[bytes | memoryview] = []
        #: The socket failed: nothing more is written, and the body must not be ended.
        self.cut = False

    def write(self, pieces: list[bytes]) -> None:
        """One chunk of these pieces (compressed first if gzipped); none if empty."""
        if self.cut:
            return
        if self._packer is not None:
            # Joined first: a family comes in hundreds of blocks, and compressing pieces one
            # by one costs more than joining them (12,000 of 1.3 KB: 9.0 ms, joined 3.4).
            pieces = [self._packer.compress(b"".join(pieces))]
        self._chunk(pieces)
        self._send()

    def finish(self) -> int:
        """The end of a gzip stream, if gzipped; what the socket did not take, into the
        spill file: the bytes spilled (none once ``cut``)."""
        if self._packer is not None and not self.cut:
            self._chunk([self._packer.flush()])
        self._packer = None
        self._send()
        pending, self._pending = self._pending, []
        return write_all(self._spill, pending) if pending else 0

    def _chunk(self, pieces: list[bytes]) -> None:
        size = sum(map(len, pieces))
        if size:  # an empty chunk would end the body
            self._pending += [b"%x\r\n" % size, *pieces, b"\r\n"]

    def _send(self) -> None:
        if self.cut:
            return
        try:
            self._pending = write_some(self._sock, self._pending)
        except OSError:  # reset, broken pipe, timed out...: the client is gone
            self.cut = True
            self._pending = []

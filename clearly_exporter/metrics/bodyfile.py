"""A scrape's body: an in-memory file, written with ``writev``, sent with ``sendfile``,
or gzipped for a scraper that asks (Prometheus does).

A 40 MB body joined in memory cost ~26 ms of page faults every scrape, holding the GIL;
written into a file by the kernel it is not copied again, and the loop sends it as it is.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Sequence
from typing import BinaryIO

from isal import isal_zlib

from clearly_exporter.engine.slab import memory_file

#: Chunks one ``writev`` takes at most.
IOV_MAX = os.sysconf("SC_IOV_MAX")
#: ISA-L's level 1: an exposition comes out ~12 times smaller, ~2 GB/s here; zlib's
#: fastest level made it as small at a quarter of the speed.
GZIP_LEVEL = 1
#: Window bits asking for a gzip header and trailer.
GZIP_WBITS = 16 + isal_zlib.MAX_WBITS


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> int:
    """Every chunk written at ``fd``'s position, ``IOV_MAX`` at a time; the bytes written.

    One ``writev`` releases the GIL once for ~1,000 chunks, where writing them one by
    one would wait for it again after each. A short write goes on from where it stopped.
    """
    size = sum(map(len, chunks))
    rest = write_some(fd, chunks)
    if rest:  # a socket that stopped taking them: ``write_some`` is the call for those
        raise BlockingIOError(f"{sum(map(len, rest))} of {size} bytes not written")
    return size


def write_some(fd: int, chunks: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """As many of the chunks as ``fd`` takes now, in order; what it did not take.

    For a non-blocking socket: it stops where the socket would block (any other error is
    raised); a file takes everything.
    """
    pending: list[bytes | memoryview] = list(chunks)
    first = 0
    while first < len(pending):
        batch = pending[first : first + IOV_MAX]
        try:
            done = os.writev(fd, batch)
        except BlockingIOError:
            break
        for chunk in batch:
            if done < len(chunk):
                pending[first] = memoryview(chunk)[done:]
                break
            done -= len(chunk)
            first += 1
    return pending[first:]


def gzipped(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of ``fd`` as a gzip stream.

    Read through a mapping of the file, not copied out of it. ISA-L lets go of the GIL
    while it compresses and takes it back only to grow its output, a few times a scrape,
    so the event consumer goes on meanwhile.
    """
    packer = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    if size == 0:
        return packer.flush()
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as body:
        return packer.compress(body) + packer.flush()


def body_file() -> BinaryIO:
    """A new in-memory file for one scrape's body.

    Never reused: ``sendfile`` queues the file's pages themselves on the socket, so a
    body written over them would reach a client still reading the one before.
    """
    return memory_file()


class BodyFiles:
    """The next scrape's body file, made between scrapes with its pages allocated.

    Writing 40 MB into a new in-memory file allocates its pages on the way: 14 ms in a
    quiet process, where pages allocated before take 6 ms. The allocation (9 ms, out of
    the GIL) moves out of the scrape. Each file still serves one scrape (``body_file``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: BinaryIO | None = None
        self._closed = False

    def take(self) -> BinaryIO:
        """The file made ahead, or a new one if there is none."""
        spare = self._pop()
        return spare if spare is not None else body_file()

    def make_ahead(self, size: int) -> None:
        """Make the next file, ``size`` bytes allocated; none where the system cannot."""
        allocate = getattr(os, "posix_fallocate", None)
        if allocate is None:
            return
        body = body_file()
        try:
            allocate(body.fileno(), 0, size)
        except OSError:  # no memory to spare: the next scrape allocates as it writes
            body.close()
            return
        with self._lock:
            if self._closed:  # made while the server stopped: nobody will take it
                old = body
            else:
                old, self._spare = self._spare, body
        if old is not None:
            old.close()

    def close(self) -> None:
        """Close the file made ahead, and any made from now on."""
        with self._lock:
            self._closed = True
        spare = self._pop()
        if spare is not None:
            spare.close()

    def _pop(self) -> BinaryIO | None:
        with self._lock:
            spare, self._spare = self._spare, None
        return spare

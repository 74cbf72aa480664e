"""GETs a URL every N seconds and prints how long each took: the bench's Prometheus.

A process of its own, as Prometheus is: a scraper thread in the runner's process (which
also runs the paced publisher) waited for the GIL after every read of the 40 MB body,
which put up to ~800 ms of its own on a scrape's p99.

Usage: ``scraper.py [--as-prometheus] URL EVERY [COUNT]``. Plain, it asks for nothing (the
text format, not compressed); ``--as-prometheus`` sends Prometheus 2's headers (OpenMetrics
first, gzip) and reads the body as sent. One line per scrape on stdout: ``seconds bytes``;
a scrape answered with anything but 200 prints ``error <status>`` (0: no whole answer)
and ends it. It stops
after COUNT scrapes, or when its stdin closes. A scrape longer than EVERY is followed by
the next scheduled one (missed ticks are skipped, as Prometheus does).
"""

from __future__ import annotations

import math
import select
import sys
import time
import urllib.request
from http.client import HTTPException
from urllib.error import HTTPError

#: What Prometheus 2.42 sends (read off a scrape), but the timeout.
PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
#: Bytes read at a time.
READ_SIZE = 1 << 20


def halted(seconds: float) -> bool:
    """Wait up to ``seconds``; True if stdin closed (the runner says stop) meanwhile."""
    ready, _, _ = select.select([sys.stdin], [], [], max(seconds, 0.0))
    return bool(ready) and not sys.stdin.buffer.read1(1)


def scrape(url: str, headers: dict[str, str], buffer: bytearray) -> tuple[int, int]:
    """One GET read to its end: status and size (as sent: gzipped if it was).

    Read as it comes into ``buffer``, as Prometheus's parser reads a body: ``read()``
    would also join a chunked body's chunks, one more copy of 40 MB that no scraper
    makes.
    """
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            size = 0
            while read := response.readinto(buffer):
                size += read
            return response.status, size
    except HTTPError as exc:
        return exc.code, 0
    except (HTTPException, OSError):  # cut short, refused, timed out: no scrape
        return 0, 0


def main(argv: list[str]) -> int:
    headers = {}
    if argv[:1] == ["--as-prometheus"]:
        headers, argv = PROMETHEUS, argv[1:]
    if len(argv) not in (2, 3):
        sys.exit("usage: scraper.py [--as-prometheus] URL EVERY [COUNT]")
    url, every = argv[0], float(argv[1])
    count = int(argv[2]) if len(argv) == 3 else None
    start = time.monotonic()
    tick = done = 0
    buffer = bytearray(READ_SIZE)
    while count is None or done < count:
        began = time.perf_counter()
        status, size = scrape(url, headers, buffer)
        seconds = time.perf_counter() - began
        if status != 200:
            print(f"error {status}", flush=True)
            return 1
        print(f"{seconds:.6f} {size}", flush=True)
        done += 1
        if every <= 0:
            if halted(0):
                break
            continue
        tick = max(tick + 1, math.ceil((time.monotonic() - start) / every))
        # Pacing, not synchronisation: the next scrape when it is due, or stop if told.
        if halted(start + tick * every - time.monotonic()):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

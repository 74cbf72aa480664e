"""GETs a URL every N seconds and prints how long each took: the bench's Prometheus.

A process of its own, as Prometheus is: a scraper thread in the runner's process (which
also runs the paced publisher) waited for the GIL after every read of the 40 MB body,
which put up to ~800 ms of its own on a scrape's p99.

Usage: ``scraper.py URL EVERY [COUNT]``. One line per scrape on stdout: ``seconds bytes``;
a scrape answered with anything but 200 prints ``error <status>`` and ends it. It stops
after COUNT scrapes, or when its stdin closes. A scrape longer than EVERY is followed by
the next scheduled one (missed ticks are skipped, as Prometheus does).
"""

from __future__ import annotations

import math
import select
import sys
import time
import urllib.request
from urllib.error import HTTPError


def halted(seconds: float) -> bool:
    """Wait up to ``seconds``; True if stdin closed (the runner says stop) meanwhile."""
    ready, _, _ = select.select([sys.stdin], [], [], max(seconds, 0.0))
    return bool(ready) and not sys.stdin.buffer.read1(1)


def scrape(url: str) -> tuple[int, int]:
    """One GET read to its end: status and size."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, len(response.read())
    except HTTPError as exc:
        return exc.code, 0


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        sys.exit("usage: scraper.py URL EVERY [COUNT]")
    url, every = argv[0], float(argv[1])
    count = int(argv[2]) if len(argv) == 3 else None
    start = time.monotonic()
    tick = done = 0
    while count is None or done < count:
        began = time.perf_counter()
        status, size = scrape(url)
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

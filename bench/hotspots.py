"""Summarise a py-spy raw (collapsed) profile: where a process's CPU time went.

``py-spy record --format raw --function --threads`` writes one line per distinct stack,
``thread (tid): name;outer (file:line);...;inner (file:line) count``. Own time is the
innermost frame's, also summed by package (the file's first directory, two for the
exporter's own code); inclusive time counts a function once per stack it is in, and is
shown for the exporter's functions, below the transport's call chain. Shares are of the
samples: with ``--gil`` (as bench/run.py records), of the time the GIL was held::

    python bench/hotspots.py /tmp/exporter.txt --top 20
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

THREAD = re.compile(r"^thread \(\d+\)(?:: (.*))?$")
#: The code under study: its packages are split one level further, its functions shown
#: by inclusive time.
OWN_CODE = "clearly_exporter/"


@dataclass
class Profile:
    """Samples by thread, by innermost function and by function anywhere in the stack."""

    samples: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    packages: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    #: For each function, the thread it ran on most (by own samples).
    own_threads: dict[str, Counter[str]] = field(default_factory=dict)


def _function(frame: str) -> str:
    """``Engine.ingest (clearly_exporter/engine/core.py:143)`` → the same without the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _package(function: str) -> str:
    """``kombu`` for ``... (kombu/transport/redis.py)``; ``stdlib`` for a top-level file."""
    path = function.rpartition(" (")[2].rstrip(")")
    parts = path.split("/")
    if len(parts) == 1:
        return "stdlib"
    return "/".join(parts[:2]) if path.startswith(OWN_CODE) and len(parts) > 2 else parts[0]


def read(path: Path) -> Profile:
    """Add up a raw profile's stacks (the thread, when recorded, is the first frame)."""
    out = Profile()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        match = THREAD.match(frames[0])
        thread = "main"
        if match:
            thread = match.group(1) or "main"
            frames = frames[1:]
        functions = [_function(f) for f in frames]
        out.samples += n
        out.threads[thread] += n
        if functions:
            out.own[functions[-1]] += n
            out.packages[_package(functions[-1])] += n
            out.own_threads.setdefault(functions[-1], Counter())[thread] += n
        for function in set(functions):
            if f"({OWN_CODE}" in function:
                out.inclusive[function] += n
    return out


def summary(profile: Profile, rate: int, top: int = 15) -> list[str]:
    """Lines for a report: threads' and packages' shares, then the top functions by own
    time and the exporter's by inclusive time."""
    n = profile.samples or 1
    lines = [
        f"{profile.samples} samples at {rate} Hz (~{profile.samples / rate:.1f} s); by thread: "
        + ", ".join(f"{t} {100 * c / n:.0f}%" for t, c in profile.threads.most_common()),
        "own time by package: "
        + ", ".join(f"{p} {100 * c / n:.0f}%" for p, c in profile.packages.most_common()),
    ]
    lines.append(f"top {top} by own time:")
    for function, count in profile.own.most_common(top):
        thread = profile.own_threads[function].most_common(1)[0][0]
        lines.append(f"  {100 * count / n:5.1f}%  {function}  [{thread}]")
    lines.append(f"top {top} of {OWN_CODE.rstrip('/')} by inclusive time:")
    for function, count in profile.inclusive.most_common(top):
        lines.append(f"  {100 * count / n:5.1f}%  {function}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    parser.add_argument("--rate", type=int, default=100, help="py-spy's --rate when recorded")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print("\n".join(summary(read(args.profile), args.rate, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of clearly-exporter: event rate, tracing, memory, scrape time, freshness.

Modes (``--mode``, ``all`` runs each in turn):

- drain: the exporter, without and with tracing (to an OTLP sink process), against
  celery's bare ``EventReceiver``, each draining the same storm from a frozen backlog;
- memory: RSS per tasks tracked, the storm published in step with the exporter;
- scrape: /metrics with every (name, queue, state) series, timed under a steady load,
  and the ingest rate with and without a scrape a second;
- freshness: delay from an event's publication to its effect, under a steady load.

See bench/README.md for the method and the latest figures::

    python bench/run.py --mode drain --broker redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import drain
import live
import redis
from procs import BenchError, redis_target, unlimited_pubsub
from storm import ALL_OUTCOMES, StormSpec, build_storm, describe, spec_arguments, spec_from

MODES = ("drain", "memory", "scrape", "freshness")
#: Each mode's storm, before the storm options given on the command line.
SPECS = {
    "drain": StormSpec(),
    "memory": StormSpec(tasks=300_000),
    "scrape": StormSpec(names=1000, queues=4, workers=200, outcomes=ALL_OUTCOMES),
    "freshness": StormSpec(),
}


def arguments() -> argparse.ArgumentParser:
    """Options of every mode; the storm's default to None so each mode fills its own."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=[*MODES, "all"], default="drain")
    storm = parser.add_argument_group(
        "storm (each mode has its own defaults: drain and freshness 100k tasks, 200 names; "
        "memory 300k tasks; scrape 100k tasks, 1000 names x 4 queues x every outcome, "
        "200 workers)"
    )
    spec_arguments(storm, None)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--max-tasks",
        type=int,
        default=0,
        help="exporter --max-tasks [drain: tasks + 10%%; memory: 1,000,000; "
        "scrape, freshness: every task published + 10%%]",
    )
    parser.add_argument(
        "--exporter-arg", action="append", default=[], help="extra exporter option (repeatable)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per wait")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")

    group = parser.add_argument_group("drain")
    group.add_argument("--rounds", type=int, default=3, help="runs, each with fresh consumers")
    group.add_argument(
        "--order",
        choices=["rotate", "fixed"],
        default="rotate",
        help="thaw order: each round starting one further along (bare, exporter, tracing), "
        "or always that order",
    )
    group.add_argument("--scrapes", type=int, default=5, help="GETs of /metrics after a drain")
    group.add_argument(
        "--no-tracing", action="store_true", help="leave out the exporter with tracing"
    )
    group.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each exporter drain with py-spy into DIR and summarise (slows it a bit)",
    )
    group.add_argument(
        "--profile-nonblocking",
        action="store_true",
        help="py-spy without stopping the exporter per sample (many samples then fail)",
    )

    group = parser.add_argument_group("scrape and freshness")
    group.add_argument(
        "--load-rate", type=float, default=20_000, help="events/s of the steady load"
    )
    group.add_argument("--scrape-count", type=int, default=50, help="scrapes timed under load")
    group.add_argument("--scrape-every", type=float, default=1.0, help="seconds between scrapes")
    group.add_argument(
        "--as-prometheus",
        action="store_true",
        help="scrape: ask as Prometheus does (OpenMetrics, gzip); plain: the text format, "
        "not compressed",
    )
    group.add_argument(
        "--ingest-rounds",
        type=int,
        default=3,
        help="scrape: backlogs drained without scrapes, and as many with (a 100k-task "
        "storm is ~4 s of draining: one pair alone moves the ratio by +-10%%)",
    )
    group.add_argument(
        "--freshness-seconds", type=float, default=30, help="duration of the steady load"
    )
    group.add_argument("--marker-every", type=float, default=0.5, help="seconds between markers")
    group.add_argument(
        "--tracing",
        action="store_true",
        help="scrape, freshness: the exporter sends spans to a sink (and exemplars show)",
    )
    group.add_argument("--idle-markers", type=int, default=20, help="markers with no load")
    group.add_argument(
        "--poll-ms", type=float, default=2, help="pause between polls of a marker's state"
    )
    return parser


def exporter_version() -> str:
    """The package's commit, ``+changes`` when its files differ from it: figures are only
    comparable for the same code."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "clearly_exporter") else "")


def engine_build() -> str:
    """The engine's build the exporters run, "mypyc" or "python": they import the package
    from the current folder, as this asks it."""
    done = subprocess.run(
        [sys.executable, "-c", "from clearly_exporter.engine import BUILD; print(BUILD)"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


def run_modes(args: argparse.Namespace, modes: list[str]) -> dict:
    """Each mode in turn, with Redis keeping whole backlogs for frozen subscribers."""
    r, db = redis_target(args.broker)
    version, engine = exporter_version(), engine_build()
    print(f"clearly-exporter at {version}, engine: {engine}", flush=True)
    figures: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": sys.argv,
        "exporter": version,
        "engine": engine,
    }
    with unlimited_pubsub(r), tempfile.TemporaryDirectory(prefix="clearly-bench-") as tmp:
        for mode in modes:
            spec = spec_from(args, SPECS[mode])
            if mode == "drain":
                storm = build_storm(spec)
                print(f"drain: storm built: {describe(storm)}", flush=True)
                figures[mode] = drain.run(args, storm, r, db, Path(tmp))
            else:
                figures[mode] = live.run(mode, args, spec, r, db, Path(tmp))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    if min(args.rounds, args.scrapes, args.scrape_count, args.ingest_rounds) < 1:
        parser.error("--rounds, --scrapes, --scrape-count and --ingest-rounds must be at least 1")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    def interrupted(signum: int, frame: object) -> None:
        """SIGTERM unwinds like Ctrl-C, so children and the Redis config are cleaned up."""
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    modes = list(MODES) if args.mode == "all" else [args.mode]
    try:
        figures = run_modes(args, modes)
    except (BenchError, redis.RedisError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; consumers stopped and the Redis config restored", file=sys.stderr)
        return 130
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Steady, mixed traffic for the demo app, so every metric moves without user input.

Run as ``python -m clearly_exporter.demo.producer``; SIGINT or SIGTERM stop it cleanly.
``CLEARLY_DEMO_RATE`` sets the messages per second (default 2).
"""

from __future__ import annotations

import os
import random
import sys
import threading
from collections.abc import Callable

from celery import chord, group

from clearly_exporter.demo.app import (
    add,
    app,
    big,
    fail,
    fan_in,
    fan_out,
    flaky,
    login,
    slow,
    spawn,
    total,
    wait_then,
)
from clearly_exporter.demo.signals import StopRequest, stop_on_signals

#: How often the main thread checks for a stop request and on the producing thread.
SIGNAL_POLL = 0.1

#: A traffic action sends some work and returns how many messages it published.
Action = Callable[[random.Random], int]


def _add(rng: random.Random) -> int:
    """The common case: a quick success."""
    add.delay(rng.randint(0, 100), rng.randint(0, 100))
    return 1


def _fail(rng: random.Random) -> int:
    """A ValueError, with messages that vary."""
    fail.delay(rng.choice(["bad input", "upstream timeout", "no such user"]))
    return 1


def _flaky(rng: random.Random) -> int:
    """Retries before success; the retried attempts come from the workers."""
    flaky.delay(f"job-{rng.randint(0, 999)}", failures=rng.randint(1, 3))
    return 1


def _slow(rng: random.Random) -> int:
    """Seconds-long runtimes, to fill the upper runtime buckets and hold workers busy."""
    slow.delay(round(rng.uniform(0.5, 3.0), 2))
    return 1


def _big(rng: random.Random) -> int:
    """Arguments and a result over the size events carry whole."""
    big.delay("".join(rng.choices("abcdef", k=2000)))
    return 1


def _login(rng: random.Random) -> int:
    """A secret keyword argument, for redaction."""
    login.delay(rng.choice(["alice", "bob", "carol"]), password="hunter2")
    return 1


def _spawn(rng: random.Random) -> int:
    """A parent and its subtasks; the subtasks count too, though a worker sends them."""
    n = rng.randint(2, 4)
    spawn.delay(n)
    return 1 + n


def _revoked(rng: random.Random) -> int:
    """Revoked during its countdown, so it is discarded without ever starting."""
    result = wait_then.apply_async((1.0,), countdown=rng.uniform(2.0, 5.0))
    app.control.revoke(result.id)
    return 2


def _chain(rng: random.Random) -> int:
    """Three links; each link's parent is the one before it."""
    (add.s(1, 2) | add.s(3) | add.s(4)).delay()
    return 3


def _group(rng: random.Random) -> int:
    """Tasks sharing a group id."""
    n = rng.randint(2, 5)
    group(add.s(i, i) for i in range(n)).delay()
    return n


def _chord(rng: random.Random) -> int:
    """A group and a callback that joins its results (through the result backend)."""
    n = rng.randint(2, 5)
    chord(add.s(i, i) for i in range(n))(total.s())
    return n + 1


def _fan_out(rng: random.Random) -> int:
    """A group applied from inside a task: the task and its members are one trace."""
    n = rng.randint(2, 4)
    fan_out.delay(n)
    return 1 + n


def _fan_in(rng: random.Random) -> int:
    """A chord applied from inside a task: header and callback in the task's trace."""
    n = rng.randint(2, 4)
    fan_in.delay(n)
    return 1 + n + 1


#: Action → relative weight; plain successes dominate, as in real traffic.
MIX: dict[Action, int] = {
    _add: 6,
    _fail: 1,
    _flaky: 1,
    _slow: 2,
    _big: 1,
    _login: 1,
    _spawn: 1,
    _revoked: 1,
    _chain: 1,
    _group: 1,
    _chord: 1,
    _fan_out: 1,
    _fan_in: 1,
}


#: Actions that join results through the result backend.
CHORDS = (_chord, _fan_in)


def actions() -> dict[Action, int]:
    """The traffic mix this app supports: chords need a result backend to join on."""
    if app.conf.result_backend:
        return MIX
    return {action: weight for action, weight in MIX.items() if action not in CHORDS}


def run_producer(stop: threading.Event, rate: float = 2.0, seed: int | None = None) -> None:
    """Send a random mix of tasks at about ``rate`` messages a second until ``stop`` is set.

    Waiting on ``stop`` rather than sleeping makes a stop request take effect at once.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)
    mix = actions()
    choices, weights = list(mix), list(mix.values())
    while not stop.is_set():
        sent = rng.choices(choices, weights)[0](rng)
        stop.wait(sent / rate)


def main() -> int:
    """Produce on a thread while the main thread turns signals into ``stop``; the exit code.

    The signal handler cannot set the event itself (see ``clearly_exporter.demo.signals``).
    A second signal stops waiting for a publish that is stuck on an unreachable broker.
    """
    rate = float(os.environ.get("CLEARLY_DEMO_RATE") or 2.0)
    request, stop = StopRequest(), threading.Event()
    thread = threading.Thread(target=run_producer, args=(stop, rate), name="producer", daemon=True)
    with stop_on_signals(request):
        thread.start()
        while thread.is_alive() and request.signals < 2:
            thread.join(SIGNAL_POLL)
            if request.requested:
                stop.set()
    # Without a stop request the thread died on its own, and its traceback is printed.
    return 0 if request.requested else 1


if __name__ == "__main__":
    sys.exit(main())

"""The baseline: celery's own ``EventReceiver`` doing nothing but count events.

It is what any Celery monitor pays at least (kombu delivery, JSON decoding, Celery's
clock and timestamp adjustments), so the exporter's rate is judged against it.

Protocol with the runner, chosen to cost the counting loop nothing: the line
``consuming`` on stdout once the consumer is set up; then, for every line read on
stdin, the count so far on stdout. A side thread blocked on stdin answers, so the
consuming thread is only interrupted when asked. End of stdin ends the process.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from celery import Celery
from celery.events.receiver import EventReceiver


class ReadyReceiver(EventReceiver):
    """An ``EventReceiver`` that says on stdout when its consumer is set up."""

    def on_consume_ready(
        self, connection: object, channel: object, consumers: list, **kwargs: object
    ) -> None:
        super().on_consume_ready(connection, channel, consumers, **kwargs)
        print("consuming", flush=True)


def answer_counts(count: list[int]) -> None:
    """Reply to each stdin line with the count; exit when the runner goes away."""
    for _ in sys.stdin:
        print(count[0], flush=True)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args(argv)
    count = [0]

    def counted(event: dict) -> None:
        count[0] += 1

    app = Celery(broker=args.broker, set_as_current=False)
    threading.Thread(target=answer_counts, args=(count,), daemon=True).start()
    with app.connection_for_read() as conn:
        ReadyReceiver(conn, handlers={"*": counted}, app=app).capture()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""kombu's filesystem transport, with messages that appear in the folder whole.

The stock transport creates a message file and then writes into it. A consumer that
lists the folder in between takes the empty file, fails to decode it, and a Celery worker
dies of that ("Unrecoverable error: JSONDecodeError", kombu issue #1551); on a busy demo
it happens within minutes. Here a message is written under a name no consumer matches
and renamed into place, which is atomic within one filesystem. Consumers need no change,
so the exporter reads these folders with the stock transport.
"""

from __future__ import annotations

import os
import socket
import uuid
from time import monotonic

from kombu import Exchange, Queue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: Suffix of a message still being written; consumers only take names ending in ``.msg``.
PARTIAL = ".part"


class Channel(filesystem.Channel):
    """Writes each message to a partial file, then renames it to the name consumers take."""

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        # The stock name: consumers take messages in the order the names sort.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + PARTIAL, "wb") as partial:
                partial.write(str_to_bytes(dumps(payload)))
            os.replace(path + PARTIAL, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


#: Event queues of the exporter are named ``PREFIX<host>.<pid>.<random>``.
PREFIX = "celeryev.clearly-exporter."


def event_queue_name() -> str:
    """A name that tells which process on which host the queue belongs to."""
    return f"{PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


def _dead(queue: str, host: str) -> bool:
    """Whether the queue is one of this host's exporters whose process is gone."""
    if not queue.startswith(PREFIX):
        return False
    owner, _, pid = queue.removeprefix(PREFIX).rpartition(".")[0].rpartition(".")
    if owner != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_dead_queues(channel: filesystem.Channel, exchange: Exchange) -> int:
    """Unbind and empty the event queues of exporters killed on this host (SIGKILL).

    A stopping exporter removes its own queue; a killed one cannot, and the filesystem
    keeps the binding forever: every event would be copied into a folder nobody reads.
    """
    host = socket.gethostname()
    removed = 0
    for routing_key, _, name in channel.get_table(exchange.name):
        if _dead(name, host):
            queue = Queue(name, exchange=exchange, routing_key=routing_key)(channel)
            queue.declare()
            queue.purge()
            queue.delete()
            removed += 1
    return removed


class Transport(filesystem.Transport):
    """The filesystem transport with atomic message files.

    No default host name, as a folder has none; kombu otherwise warns on every connection.
    """

    Channel = Channel

    @property
    def default_connection_params(self) -> dict:
        return {"port": self.default_port}

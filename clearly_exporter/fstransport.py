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
import uuid
from time import monotonic

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


class Transport(filesystem.Transport):
    """The filesystem transport with atomic message files.

    No default host name, as a folder has none; kombu otherwise warns on every connection.
    """

    Channel = Channel

    @property
    def default_connection_params(self) -> dict:
        return {"port": self.default_port}

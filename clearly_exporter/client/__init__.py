"""clearly's client, over the exporter's HTTP API: for the terminal and the REPL.

>>> from clearly_exporter.client import ClearlyClient
>>> c = ClearlyClient("http://localhost:9808")
>>> c.capture()
"""

from clearly_exporter.client.clearly import ClearlyClient
from clearly_exporter.client.http import ClientError, Credentials, ExporterApi

__all__ = ["ClearlyClient", "ClientError", "Credentials", "ExporterApi"]

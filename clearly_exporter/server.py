"""The HTTP server: ``/metrics``, ``/healthz``, ``/`` and the ``/api``, on a thread of its own.

aiohttp on a private event loop, so a slow client never holds the consumer thread;
the JSON API and its live stream share the one server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from clearly_exporter import __version__
from clearly_exporter.api.routes import Api

INDEX = """<!doctype html>
<html><head><title>clearly-exporter</title></head><body>
<h1>clearly-exporter {version}</h1>
<p>Celery events turned into Prometheus metrics.</p>
<ul>
<li><a href="metrics">/metrics</a> &mdash; Prometheus metrics (OpenMetrics when asked)</li>
<li><a href="healthz">/healthz</a> &mdash; 200 while the event consumer is connected</li>
<li><a href="api/tasks?limit=100">/api/tasks</a> &mdash; stored tasks, newest first</li>
<li><a href="api/workers">/api/workers</a> &mdash; workers</li>
<li><a href="api/stats">/api/stats</a> &mdash; tasks and events processed, events/s, lag</li>
<li><a href="api/seen-tasks">/api/seen-tasks</a> &mdash; task names seen</li>
<li><a href="api/stream">/api/stream</a> &mdash; live transitions (server-sent events)</li>
</ul>
</body></html>
"""


class HttpServer:
    """Owns the aiohttp application and the thread its loop runs on."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], str | None],
        api: Api | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self.app = web.Application()
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        if api is not None:
            api.register(self.app)
        self._loop = asyncio.new_event_loop()
        # Streams are ended on shutdown; whatever still hangs on is not waited for.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="clearly-exporter-http", daemon=True
        )

    def start(self) -> None:
        """Bind and serve; raises ``OSError`` (port in use, bad address) before serving."""
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            self._loop.run_until_complete(site.start())
        except OSError:
            self._loop.run_until_complete(self._runner.cleanup())
            raise
        self.port = self._runner.addresses[0][1]
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=INDEX.format(version=__version__), content_type="text/html")

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self.health()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{problem}\n")

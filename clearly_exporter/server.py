"""The HTTP server: ``/metrics``, ``/healthz``, ``/`` and the ``/api``, on a thread of its own.

aiohttp on a private event loop, so a slow client never holds the consumer thread;
the JSON API and its live stream share the one server. With a web config, TLS and
basic authentication cover every path; ``/healthz`` alone stays open to probes, and
tells why it is unhealthy only to a caller who authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from clearly_exporter import __version__
from clearly_exporter.api.routes import Api, error
from clearly_exporter.basicauth import BasicAuth, credentials
from clearly_exporter.metrics.bodyfile import BodyFiles, body_file, gzipped, write_all
from clearly_exporter.metrics.exposition import generate_chunks
from clearly_exporter.metrics.renderer import RenderError, RenderProcess
from clearly_exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

INDEX = """<!doctype html>
<html><head><title>clearly-exporter</title></head><body>
<h1>clearly-exporter {version}</h1>
<p>Celery events turned into Prometheus metrics.</p>
<ul>
<li><a href="metrics">/metrics</a> &mdash; Prometheus metrics (OpenMetrics when asked)</li>
<li><a href="healthz">/healthz</a> &mdash; 200 while the event consumer is connected</li>
{api}</ul>
</body></html>
"""
API_INDEX = """\
<li><a href="api/tasks?limit=100">/api/tasks</a> &mdash; stored tasks, newest first</li>
<li><a href="api/workers">/api/workers</a> &mdash; workers</li>
<li><a href="api/stats">/api/stats</a> &mdash; tasks and events processed, events/s, lag</li>
<li><a href="api/seen-tasks">/api/seen-tasks</a> &mdash; task names seen</li>
<li><a href="api/stream">/api/stream</a> &mdash; live transitions (server-sent events)</li>
"""
OPEN_PATHS = frozenset({"/healthz"})
#: Set on a request to ``OPEN_PATHS``: whether it carried valid credentials.
AUTHORIZED = "clearly_exporter.authorized"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="clearly-exporter", charset="UTF-8"'}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def sent(transport: asyncio.BaseTransport, timeout: float = 10.0) -> bool:
    """Whether the transport's write buffer emptied (its bytes are in the kernel's) within
    ``timeout``, the connection still open.

    The response's headers normally go at once; should the socket be full, this polls
    (asyncio tells no such event), a millisecond at a time.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while transport.get_write_buffer_size():  # type: ignore[attr-defined]
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.001)
    return not transport.is_closing()


def _render(
    registry: CollectorRegistry,
    accept: str,
    body: BinaryIO,
    renderer: RenderProcess | None,
    gzip: bool,
) -> tuple[int, str, bytes | None]:
    """A scrape written at the start of ``body`` (a file made ahead is larger: only its
    first ``size`` bytes are the scrape); its size, content type, and the scrape
    gzipped if ``gzip``."""
    if renderer is not None:
        size, content_type = renderer.scrape(registry, accept, body.fileno())
    else:
        chunks, content_type = generate_chunks(registry, accept)
        size = write_all(body.fileno(), chunks)
    body.seek(0)  # asyncio's sendfile without native support (TLS) reads from here
    return size, content_type, gzipped(body.fileno(), size) if gzip else None


class Guard:
    """aiohttp middleware asking for basic auth on every path but ``OPEN_PATHS``.

    bcrypt runs on a thread of its own: a flood of wrong passwords queues there, and
    neither stalls the loop nor takes the threads scrapes and queries run on.
    """

    def __init__(self, auth: BasicAuth) -> None:
        self.auth = auth
        self._bcrypt = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clearly-bcrypt")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ok = await self._authorized(request.headers.get("Authorization"))
        if ok or request.path in OPEN_PATHS:
            request[AUTHORIZED] = ok
            return await handler(request)
        if request.path.startswith("/api/"):
            response = error(401, "unauthorized: this exporter asks for a user and password")
        else:
            response = web.Response(status=401, text="401: Unauthorized\n")
        response.headers.update(CHALLENGE)
        return response

    async def _authorized(self, header: str | None) -> bool:
        creds = credentials(header)
        if creds is None:
            return False
        if self.auth.remembered(*creds):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._bcrypt, self.auth.verify, *creds)

    def close(self) -> None:
        self._bcrypt.shutdown(wait=False, cancel_futures=True)


class HttpServer:
    """Owns the aiohttp application and the thread its loop runs on."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], str | None],
        api: Api | None = None,
        web_config: WebConfig | None = None,
        renderer: RenderProcess | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        #: Renders the engine's families in a process of its own; None: in this one.
        self.renderer = renderer
        self.health = health
        web_config = web_config or WebConfig()
        self.tls = web_config.tls
        self.scheme = "https" if self.tls else "http"
        self.guard = Guard(BasicAuth(web_config.users)) if web_config.users else None
        self._index_html = INDEX.format(version=__version__, api=API_INDEX if api else "")
        self.app = web.Application(middlewares=[self.guard.middleware] if self.guard else [])
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        if api is not None:
            api.register(self.app)
        else:
            self.app.router.add_route("*", "/api/{tail:.*}", self._no_api)
        self._scrapes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="clearly-scrape")
        self._bodies = BodyFiles()
        self._loop = asyncio.new_event_loop()
        # Streams are ended on shutdown; whatever still hangs on is not waited for.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="clearly-exporter-http", daemon=True
        )

    def start(self) -> None:
        """Bind and serve; raises ``OSError`` (port in use, bad address) before serving."""
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls)
        try:
            self._loop.run_until_complete(site.start())
        except OSError:
            self._loop.run_until_complete(self._runner.cleanup())
            raise
        self.port = self._runner.addresses[0][1]
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the loop; also of a server that never started."""
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._scrapes.shutdown(wait=False, cancel_futures=True)
        self._bodies.close()
        if self.guard is not None:
            self.guard.close()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=self._index_html, content_type="text/html")

    async def _no_api(self, request: web.Request) -> web.Response:
        return error(404, "the API is switched off on this exporter (--no-api)")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """Rendered on a thread of its own into an in-memory file, sent by ``sendfile``;
        gzipped there too if the scraper asks. Streamed by the render process instead,
        where it can write to the client's socket (``_streamed``).

        While a backlog drains, the event consumer keeps the GIL up to the 5 ms switch
        interval each time the loop thread asks for it back: a body handed over in
        pieces waited that long after every write (written block by block, 40 MB took
        6 s), and joining it first cost ~26 ms of page faults. The file is written with a
        ``writev`` per 1,024 blocks and the kernel sends it. Once it is sent, the next
        scrape's file is made, a sixteenth larger.
        """
        accept = request.headers.get("Accept", "")
        # A HEAD answer says the length of the body as it is: compressing it only to tell
        # its compressed length would cost as much as a GET.
        gzip = request.method != "HEAD" and gzip_accepted(
            request.headers.get("Accept-Encoding", "")
        )
        sock = self._streamable(request)
        if sock is not None:
            # Our own descriptor of the socket, taken before anything is awaited: should the
            # client go away meanwhile, the transport's could be closed and its number
            # reused by the next connection.
            return await self._streamed(request, accept, gzip, os.dup(sock))
        body = self._bodies.take()
        render = self._scrapes.submit(_render, self.registry, accept, body, self.renderer, gzip)
        try:
            size, content_type, packed = await asyncio.wrap_future(render)
            response = web.StreamResponse(
                headers={"Content-Type": content_type, "Vary": "Accept-Encoding"}
            )
            if packed is not None:
                response.headers["Content-Encoding"] = "gzip"
            response.content_length = size if packed is None else len(packed)
            await response.prepare(request)
            if request.method != "HEAD":
                if packed is not None:
                    await response.write(packed)
                else:
                    await self._send_file(request, body, size)
            await response.write_eof()
            self._make_ahead(size)
        finally:
            # Now, or when the render is over if the client went away (this coroutine
            # cancelled) while it still writes into the file.
            render.add_done_callback(lambda _: body.close())
        return response

    def _streamable(self, request: web.Request) -> int | None:
        """The client's socket, if the render process can write the body to it: a GET
        over HTTP/1.1 (chunks) without TLS, and a render process to do it."""
        transport = request.transport
        if (
            self.renderer is None
            or request.method != "GET"
            or request.version < (1, 1)
            or transport is None
            or transport.get_extra_info("sslcontext") is not None
            or not self.renderer.ready()
        ):
            return None
        sock = transport.get_extra_info("socket")
        return None if sock is None else sock.fileno()

    async def _streamed(
        self, request: web.Request, accept: str, gzip: bool, sock: int
    ) -> web.StreamResponse:
        """The headers here, then the body from the render process as it renders it
        (``metrics.chunked``); what the socket did not take at once, from its spill file.
        ``sock`` is ours to close, once nothing may still pass it on.

        A render that fails after the headers went out leaves the body cut short: the
        connection is closed, so the scraper sees a failed scrape, not a wrong one.
        """
        assert self.renderer is not None
        render: Future[int | None] | None = None
        spill: BinaryIO | None = None

        def release(_: object = None) -> None:
            os.close(sock)
            if spill is not None:
                spill.close()

        try:
            # Not the file made ahead for the file path: a stream rarely spills anything.
            spill = body_file()
            headers = {"Content-Type": choose_encoder(accept)[1], "Vary": "Accept-Encoding"}
            if gzip:
                headers["Content-Encoding"] = "gzip"
            response = web.StreamResponse(headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            transport = request.transport
            # The render process writes to the socket itself: nothing of ours may be queued.
            if transport is None or not await sent(transport):
                if transport is not None:
                    transport.abort()  # a client that does not read its headers
                return response
            render = self._scrapes.submit(
                self.renderer.stream, self.registry, accept, sock, spill.fileno(), gzip
            )
            try:
                spilled = await asyncio.wrap_future(render)
            except RenderError:  # RenderProcess logged it
                spilled = None
            except Exception:  # a collector's bug, say: the headers are out all the same
                log.exception("a streamed scrape failed; its connection is closed")
                spilled = None
            if spilled is None:  # part of a body is out: never end it
                transport.abort()
                return response
            if spilled:
                await self._send_file(request, spill, spilled)
            await response.write_eof()
        finally:
            # Now, or when the render is over if this coroutine was cancelled under it.
            if render is None:
                release()
            else:
                render.add_done_callback(release)
        return response

    async def _send_file(self, request: web.Request, body: BinaryIO, size: int) -> None:
        if request.transport is None:
            raise ConnectionResetError("the client went away")
        await asyncio.get_running_loop().sendfile(request.transport, body, 0, size)

    def _make_ahead(self, size: int) -> None:
        """The next scrape's body file, made now it is sent."""
        with contextlib.suppress(RuntimeError):  # the server is stopping
            self._scrapes.submit(self._bodies.make_ahead, size + size // 16)

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self.health()
        if problem is None:
            return web.Response(text="ok\n")
        if not request.get(AUTHORIZED, True):
            problem = "unhealthy (authenticate to see why)"
        return web.Response(status=503, text=f"{problem}\n")

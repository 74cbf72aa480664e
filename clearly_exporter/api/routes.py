"""The ``/api`` endpoints: JSON answers and the server-sent event stream.

Queries run on a worker thread (they may scan every stored task), so the loop keeps
serving streams and scrapes meanwhile. Errors are JSON ``{"error": "..."}`` in one
line, with 400 for a bad parameter and 404 for an unknown task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from clearly_exporter import __version__
from clearly_exporter.api.complete import completed
from clearly_exporter.api.filters import QueryError, count, flag, known_state, matcher
from clearly_exporter.api.queries import Queries
from clearly_exporter.api.stream import FLUSH, HubFull, StreamFilter, StreamHub, sse
from clearly_exporter.results import ResultFetcher

#: Seconds without events after which a stream sends a keep-alive comment.
KEEPALIVE = 15.0
#: Seconds between two samples of the event counters (events/s, lag).
SAMPLE_EVERY = 1.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unknown API path or method answered in JSON too, as every API answer is."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        response = error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


class Api:
    """Registers the endpoints on an aiohttp application and runs their background jobs."""

    def __init__(
        self, queries: Queries, hub: StreamHub, fetcher: ResultFetcher | None = None
    ) -> None:
        self.queries = queries
        self.hub = hub
        #: Completes a task view's cut values from the result backend (``--backend``).
        self.fetcher = fetcher

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/tasks", self._tasks)
        app.router.add_get("/api/tasks/{uuid}", self._task)
        app.router.add_get("/api/workers", self._workers)
        app.router.add_get("/api/stats", self._stats)
        app.router.add_get("/api/seen-tasks", self._seen_tasks)
        app.router.add_post("/api/reset", self._reset)
        app.router.add_get("/api/stream", self._stream)
        app.middlewares.append(_json_errors)
        app.cleanup_ctx.append(self._background)
        app.on_shutdown.append(self._shutdown)

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        jobs = [asyncio.create_task(self.hub.run()), asyncio.create_task(self._sample())]
        yield
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job

    async def _shutdown(self, app: web.Application) -> None:
        await self.hub.close("the exporter is stopping")

    async def _sample(self) -> None:
        while True:
            await self._off_loop(self.queries.sample)
            await asyncio.sleep(SAMPLE_EVERY)

    @staticmethod
    async def _off_loop(func: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(func, *args))

    async def _tasks(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            match = matcher(query.get("pattern"), flag(query, "negate", False))
            state = known_state(query.get("state"))
            limit = count(query, "limit")
            reverse = flag(query, "reverse", True)
        except QueryError as exc:
            return error(400, str(exc))
        tasks = await self._off_loop(self.queries.tasks, match, state, limit, reverse)
        # Lists keep the events' values; the task view completes them: a client may ask it.
        return json_response({"tasks": tasks, "completes_values": self.fetcher is not None})

    async def _task(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        task = await self._off_loop(self.queries.task_unredacted, uuid)
        if task is None:
            return error(404, f"unknown task {uuid!r} (never seen, or no longer stored)")
        task = await completed(self.fetcher, task)
        return json_response(await self._off_loop(self.queries.redacted, task))

    async def _workers(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            match = matcher(query.get("pattern"), flag(query, "negate", False))
            stats = flag(query, "stats", False)
        except QueryError as exc:
            return error(400, str(exc))
        workers = await self._off_loop(self.queries.workers, match, stats)
        return json_response({"workers": workers})

    async def _stats(self, request: web.Request) -> web.Response:
        stats = await self._off_loop(self.queries.stats)
        stats.update(stream_clients=len(self.hub.clients), stream_cutoffs=self.hub.cutoffs)
        return json_response(stats)

    async def _seen_tasks(self, request: web.Request) -> web.Response:
        return json_response({"tasks": await self._off_loop(self.queries.seen_tasks)})

    async def _reset(self, request: web.Request) -> web.Response:
        return json_response(await self._off_loop(self.queries.reset))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            filters = StreamFilter(
                tasks=matcher(query.get("tasks"), flag(query, "negate_tasks", False)),
                workers=matcher(query.get("workers"), flag(query, "negate_workers", False)),
            )
            client = self.hub.connect(filters, request.transport)
        except QueryError as exc:
            return error(400, str(exc))
        except HubFull as exc:
            return error(503, str(exc))
        response = web.StreamResponse(headers=SSE_HEADERS)
        response.force_close()  # a stream that ends (cut off, shutdown) closes its connection
        try:
            await response.prepare(request)
            hello = {
                "version": __version__,
                "flush_seconds": FLUSH,
                # The task view completes what Celery cut: a client may ask it.
                "completes_values": self.fetcher is not None,
            }
            await response.write(sse("hello", hello))
            while client.reason is None or client.pending:
                await response.write(await client.next(KEEPALIVE))
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self.hub.finished(client)
        return response

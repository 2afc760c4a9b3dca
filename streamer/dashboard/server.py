"""The dashboard's HTTP side: one page, its static files, JSON views and a live event stream.

Served by aiohttp (docs/dashboard.md says why): asyncio, so hundreds of open server-sent-event
streams cost a task each rather than a thread; static files, streaming responses and a runner
that lives in a thread of its own come with it, and there is no build step.

Routes: ``/`` (the page), ``/static/*`` (its scripts, styles and the vendored uPlot),
``/api/fleet``, ``/api/rates``, ``/api/alerts``, ``/api/keys?q=``, ``/api/key?key=``,
``/api/heatmap``, ``/api/models``, ``/api/events`` (server-sent events: ``alert`` at once when
an episode starts, changes or ends; ``fleet`` every second), ``/healthz``, ``/readyz``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from schemas.errors import ConfigError
from schemas.settings import Settings
from streamer.dashboard.runtime import Dashboard

__all__ = ["STATIC", "DashboardServer", "build_app", "run_dashboard"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_FLEET_EVERY_S = 1.0  # the header's rates and the connection banner refresh this often
_QUEUE = 256  # events buffered per stream; a client this far behind is dropped and reconnects


class Hub:
    """Fans live events out to every open ``/api/events`` stream (on the server's loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: set[asyncio.Queue[tuple[str, Any] | None]] = set()

    def publish_threadsafe(self, kind: str, data: Any) -> None:
        """From any thread (the alert reader)."""
        self._loop.call_soon_threadsafe(self._publish, kind, data)

    def _publish(self, kind: str, data: Any) -> None:
        for queue in list(self._queues):
            if queue.full():  # too slow: end its stream; EventSource reconnects and refetches
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)
            else:
                queue.put_nowait((kind, data))

    def subscribe(self) -> asyncio.Queue[tuple[str, Any] | None]:
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(_QUEUE)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, Any] | None]) -> None:
        self._queues.discard(queue)

    def close(self) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._queues.clear()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def build_app(dashboard: Dashboard, hub: Hub) -> web.Application:
    """The routes of the module docstring over ``dashboard``'s state."""
    state = dashboard.state
    dashboard.state.listen(lambda episodes: hub.publish_threadsafe("alert", episodes))

    async def in_thread(fn: Any, *args: Any) -> Any:
        """Views that scan every key (heat map) or ask Redis run off the event loop, so the
        live streams never wait for them."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def index(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def fleet(_: web.Request) -> web.Response:
        return _json(state.fleet_view())

    async def rates(_: web.Request) -> web.Response:
        return _json(state.rates_view())

    async def alerts(_: web.Request) -> web.Response:
        return _json(state.alerts_view())

    async def keys(request: web.Request) -> web.Response:
        return _json(state.search(request.query.get("q", ""), limit=20))

    async def key(request: web.Request) -> web.Response:
        name = request.query.get("key", "")
        view = await in_thread(state.key_view, name)
        if view is None:
            return _json({"error": f"no score events for key {name!r} in memory"}, 404)
        view["redis"] = await in_thread(dashboard.reading, name)
        return _json(view)

    async def heatmap(request: web.Request) -> web.Response:
        rows = min(100, max(1, int(request.query.get("rows", "20"))))
        return _json(await in_thread(state.heatmap_view, rows))

    async def models(_: web.Request) -> web.Response:
        return _json(state.models_view())

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = hub.subscribe()

        async def send(kind: str, data: Any) -> None:
            await response.write(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data)
                                 + b"\n\n")  # fmt: skip

        loop = asyncio.get_running_loop()
        try:
            await response.write(b"retry: 1000\n\n")
            await send("fleet", state.fleet_view())
            last_fleet = loop.time()
            while True:
                wait = max(0.0, last_fleet + _FLEET_EVERY_S - loop.time())
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    item = ("fleet", None)
                if item is None:
                    break
                if item[0] == "fleet":
                    await send("fleet", state.fleet_view())
                    last_fleet = loop.time()
                else:
                    await send(*item)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(queue)
        return response

    async def healthz(_: web.Request) -> web.Response:
        return _json({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        ok = dashboard.ready()
        return _json({"ok": ok}, 200 if ok else 503)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    for path, handler in (
        ("/api/fleet", fleet), ("/api/rates", rates), ("/api/alerts", alerts),
        ("/api/keys", keys), ("/api/key", key), ("/api/heatmap", heatmap),
        ("/api/models", models), ("/api/events", events), ("/healthz", healthz),
        ("/readyz", readyz),
    ):  # fmt: skip
        app.router.add_get(path, handler)
    return app


class DashboardServer:
    """The app on its own event loop in a thread: the CLI waits beside it; tests start one
    and point a browser at :attr:`port`."""

    def __init__(self, dashboard: Dashboard, *, host: str, port: int) -> None:
        self._dashboard = dashboard
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dash-http",
                                        daemon=True)  # fmt: skip
        self._runner: web.AppRunner | None = None
        self._hub = Hub(self._loop)
        self.port = port

    def start(self) -> DashboardServer:
        """Bind and serve; a port that cannot be bound is a :class:`ConfigError`."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        try:
            self.port = future.result(30)
        except OSError as exc:
            self._loop.call_soon_threadsafe(self._loop.stop)
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(
                f"dashboard port {self._port} cannot be bound ({reason}); set another "
                "with --port or AMA_DASHBOARD__PORT (0 = any free port)"
            ) from None
        return self

    async def _serve(self) -> int:
        app = build_app(self._dashboard, self._hub)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        return int(self._runner.addresses[0][1])

    def stop(self) -> None:
        async def close() -> None:
            self._hub.close()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(15)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("dashboard server did not close in time")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)


def run_dashboard(settings: Settings) -> None:
    """``ama-stream dashboard``: bind the port (a clash is a one-line error), check Kafka,
    Redis and the topics, then serve until SIGTERM/SIGINT."""
    log.info("effective configuration", extra={"settings": settings.redacted_dict()})
    cfg = settings.dashboard
    dashboard = Dashboard(settings)
    server = DashboardServer(dashboard, host=cfg.host, port=cfg.port).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        dashboard.start()
        log.info("dashboard serving", extra={"url": f"http://{cfg.host}:{server.port}/"})
        stop.wait()
        log.info("signal received; stopping")
    finally:
        server.stop()
        dashboard.stop()

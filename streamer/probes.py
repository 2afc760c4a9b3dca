"""The HTTP endpoints every long-running job serves: /metrics, /healthz (liveness), /readyz.

A small threaded ``http.server`` because prometheus-client's own server only knows /metrics.
The job says what "healthy" and "ready" mean for it (:class:`Probes`); this module only serves
them, and decides which port: an explicitly configured port must be free (a clash is a
misconfiguration and ends start-up with one line), while the default port falls back to any
free one, so a second worker on the same host starts instead of dying.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas.errors import ConfigError

__all__ = ["DEFAULT_PORT", "ProbeServer", "Probes", "serve"]

log = logging.getLogger(__name__)

#: Used when ``metrics.port`` is not set. Not a registered Prometheus exporter port, so it
#: rarely clashes with node_exporter (9100) and friends.
DEFAULT_PORT = 9400


@dataclass(frozen=True, slots=True)
class Probes:
    """What one job exposes: its metrics registry and its two probe answers."""

    registry: CollectorRegistry
    healthy: Callable[[], bool]
    ready: Callable[[], bool]


class ProbeServer:
    """Serves one job's :class:`Probes` on ``host:port`` (port 0 = any free port)."""

    def __init__(self, probes: Probes, *, port: int, host: str = "0.0.0.0") -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(probes))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ama-probes", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(probes: Probes, port: int | None) -> ProbeServer:
    """Start serving on ``port``; None means :data:`DEFAULT_PORT`, or a free port if taken."""
    if port is not None:
        try:
            return ProbeServer(probes, port=port).start()
        except OSError as exc:
            raise ConfigError(
                f"metrics port {port} cannot be bound ({exc.strerror}); set another with "
                "--metrics-port or AMA_METRICS__PORT, or leave it unset to pick a free one"
            ) from None
    try:
        return ProbeServer(probes, port=DEFAULT_PORT).start()
    except OSError:
        server = ProbeServer(probes, port=0).start()
        log.warning(
            "default metrics port taken (another job on this host?); serving on a free port",
            extra={"default_port": DEFAULT_PORT, "port": server.port},
        )
        return server


def _handler_for(probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(probes.registry))
            elif self.path in ("/healthz", "/readyz"):
                ok = probes.healthy() if self.path == "/healthz" else probes.ready()
                body = json.dumps({"ok": ok}).encode()
                self._send(200 if ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would drown the job's own log."""

    return Handler

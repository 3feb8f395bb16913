"""The HTTP endpoints: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for
orchestrators.

- ``/healthz`` (liveness): 200 while the main loop keeps turning; 503 when it has not
  completed an iteration for ``stall_after_s`` (a stuck process should be restarted).
- ``/readyz`` (readiness): 200 only in the ``running`` state; 503 while starting,
  recovering, waiting for the broker, paused for backpressure or stopping.

Both answer a small JSON document naming the state, so a person with ``curl`` learns why.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthState:
    """Thread-safe service state shared by the main loop and the HTTP server."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._state = "starting"
        self._detail = ""
        self._heartbeat = time.monotonic()
        self.stall_after_s = stall_after_s
        self.rejected_share = 0.0
        """Share of the recent events that were rejected (set by the main loop)."""

    def set(self, state: str, detail: str = "") -> None:
        with self._lock:
            self._state = state
            self._detail = detail

    def beat(self) -> None:
        """Called by the main loop on every iteration."""
        self._heartbeat = time.monotonic()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            age = time.monotonic() - self._heartbeat
            return {
                "state": self._state,
                "detail": self._detail,
                "seconds_since_loop": round(age, 3),
                "live": age < self.stall_after_s,
                "ready": self._state == "running",
                "rejected_share": self.rejected_share,
            }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = generate_latest(self.server.registry)
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            info = self.server.health.snapshot()
            ok = info["live"] if path == "/healthz" else info["ready"]
            self._send(200 if ok else 503, json.dumps(info).encode(), "application/json")
        else:
            self._send(404, b"freshrec: try /metrics, /healthz or /readyz\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every second would drown the service's own log


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, health: HealthState
    ) -> None:
        super().__init__(address, _Handler)
        self.registry = registry
        self.health = health


class HttpEndpoint:
    """Serves the endpoints on a background thread.

    Example
    -------
    >>> from prometheus_client import CollectorRegistry
    >>> endpoint = HttpEndpoint("127.0.0.1", 0, CollectorRegistry(), HealthState())
    >>> endpoint.start(); endpoint.port > 0
    True
    >>> endpoint.stop()
    """

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: HealthState
    ) -> None:
        self._server = _Server((host, port), registry, health)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="freshrec-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        host = self._server.server_address[0]
        return f"{host if isinstance(host, str) else host.decode()}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

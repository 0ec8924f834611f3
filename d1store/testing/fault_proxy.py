"""HTTP proxy that injects network and server faults, for testing retries.

The proxy listens on 127.0.0.1 and forwards every request to a loopback
upstream, such as a local D1 server. Each request takes the next fault from
a queue, or when the queue is empty, one drawn from a seeded random mix::

    from d1store.testing.fault_proxy import RESET_AFTER, FaultProxy, status

    with FaultProxy(server.base_url) as proxy:
        proxy.enqueue(status(503), RESET_AFTER)
        backend = D1Backend(..., base_url=proxy.base_url)
        backend.execute(...)  # 503, then the write applied but the reply lost
        assert proxy.fault_counts["status"] == 1

Every response carries ``Connection: close``, so each request uses a new
connection and a dropped connection never affects the next request.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import random
import socket
import struct
import sys
import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

__all__ = [
    "PASS",
    "RESET_AFTER",
    "RESET_BEFORE",
    "Fault",
    "FaultProxy",
    "delay",
    "status",
]

logger = logging.getLogger(__name__)

FaultKind = Literal["pass", "status", "reset_before", "reset_after", "delay"]

# Headers that describe one connection and must not be forwarded (RFC 9110,
# 7.6.1), plus Host and Content-Length, which each hop sets for itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# A request body larger than this is rejected, so a broken test cannot make
# the proxy buffer without bound. D1's own request limit is smaller.
_MAX_BODY_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Fault:
    """Action the proxy takes for one request.

    Build instances with :data:`PASS`, :data:`RESET_BEFORE`,
    :data:`RESET_AFTER`, :func:`status` and :func:`delay`.
    """

    kind: FaultKind
    #: HTTP status returned instead of forwarding, for ``kind == "status"``.
    status: int | None = None
    #: ``Retry-After`` header in seconds sent with ``status``, if any.
    retry_after: float | None = None
    #: Seconds to wait before forwarding, for ``kind == "delay"``.
    seconds: float = 0.0


#: Forward the request and return the upstream response unchanged.
PASS = Fault("pass")
#: Drop the connection without forwarding, so the upstream never receives the request.
RESET_BEFORE = Fault("reset_before")
#: Forward the request, so the upstream applies it, then drop the connection
#: without sending the response.
RESET_AFTER = Fault("reset_after")


def status(code: int, *, retry_after: float | None = None) -> Fault:
    """Return a fault that responds with HTTP ``code`` without forwarding."""
    if not 400 <= code <= 599:
        raise ValueError(f"status must be an HTTP error status 400-599, got {code}")
    if retry_after is not None and retry_after < 0:
        raise ValueError(f"retry_after must be >= 0 seconds, got {retry_after}")
    return Fault("status", status=code, retry_after=retry_after)


def delay(seconds: float) -> Fault:
    """Return a fault that waits ``seconds`` and then forwards the request."""
    if not 0 <= seconds <= 300:
        raise ValueError(f"delay must be between 0 and 300 seconds, got {seconds}")
    return Fault("delay", seconds=seconds)


def _check_loopback(upstream: str) -> tuple[str, int, str]:
    """Return host, port and path prefix of ``upstream``, or raise unless it is loopback."""
    parts = urlsplit(upstream)
    if parts.scheme != "http":
        raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"upstream host {host!r} is not a loopback address; "
                "the fault proxy forwards only to 127.0.0.0/8, ::1 or localhost"
            )
    port = parts.port or 80
    return host, port, parts.path.rstrip("/")


class FaultProxy:
    """Fault-injecting HTTP proxy to a loopback upstream, listening on 127.0.0.1.

    ``faults`` are used first, in order, one per request. After them, each
    request draws from ``mix``, a list of ``(fault, probability)`` pairs
    with a total of at most 1 (the rest is :data:`PASS`), using a
    ``random.Random(seed)``. Without ``mix`` the remaining requests pass.

    ``timeout`` bounds every socket operation, to the client and to the
    upstream, so a stuck peer cannot hang a test run.
    """

    def __init__(
        self,
        upstream: str,
        *,
        faults: Iterable[Fault] = (),
        mix: Sequence[tuple[Fault, float]] = (),
        seed: int | None = None,
        port: int = 0,
        timeout: float = 30.0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._upstream_host, self._upstream_port, self._prefix = _check_loopback(upstream)
        total = sum(probability for _, probability in mix)
        if any(probability < 0 for _, probability in mix) or total > 1.0 + 1e-9:
            raise ValueError(f"mix probabilities must be >= 0 with a total of at most 1, got {total}")
        self.timeout = timeout
        self._mix = list(mix)
        self._random = random.Random(seed)
        self._queue: deque[Fault] = deque(faults)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: Requests received so far.
        self.request_count = 0
        #: Requests forwarded to the upstream, including those reset afterwards.
        self.forwarded_count = 0
        #: Injected faults by kind; ``"pass"`` is not counted.
        self.fault_counts: Counter[str] = Counter()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """URL to use in place of the upstream URL: same path, proxy's address."""
        if self._server is None:
            raise RuntimeError("the fault proxy is not started: call start() first")
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}{self._prefix}"

    @property
    def fault_count(self) -> int:
        """Total number of injected faults."""
        with self._lock:
            return sum(self.fault_counts.values())

    def enqueue(self, *faults: Fault) -> None:
        """Append ``faults`` to the queue used by the next requests."""
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        """Drop queued faults and stop using the random mix."""
        with self._lock:
            self._queue.clear()
            self._mix = []

    def _next_fault(self) -> Fault:
        with self._lock:
            self.request_count += 1
            fault = self._queue.popleft() if self._queue else self._draw()
            if fault.kind != "pass":
                self.fault_counts[fault.kind] += 1
            return fault

    def _draw(self) -> Fault:
        point = self._random.random()
        for fault, probability in self._mix:
            if point < probability:
                return fault
            point -= probability
        return PASS

    def start(self) -> Self:
        """Start serving in a background thread and return ``self``."""
        if self._server is not None:
            raise RuntimeError("the fault proxy is already started")
        server = _ProxyServer(("127.0.0.1", self._port), self)
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-proxy-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("fault proxy on %s forwarding to %s", self.base_url, self.upstream)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"FaultProxy(upstream={self.upstream!r}, requests={self.request_count}, "
            f"faults={dict(self.fault_counts)})"
        )


class _ProxyServer(ThreadingHTTPServer):
    # Daemon handler threads are not joined on close, so stop() cannot hang
    # on a client that keeps its connection open.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: FaultProxy) -> None:
        self.owner = owner
        super().__init__(address, _ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients of a fault proxy often give up mid-request. That is not a
        # proxy failure, so it is logged instead of printed to stderr.
        logger.debug(
            "fault proxy: request from %s failed",
            client_address,
            exc_info=sys.exc_info(),
        )


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.owner = self.server.owner
        super().setup()
        # Bounds every read and write on the client connection.
        self.connection.settimeout(self.owner.timeout)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._read_body()
        if body is None:
            return
        fault = self.owner._next_fault()
        logger.debug("fault proxy: %s %s -> %s", self.command, self.path, fault)

        if fault.kind == "reset_before":
            self._reset()
            return
        if fault.kind == "status":
            assert fault.status is not None
            self._send_injected_status(fault.status, fault.retry_after)
            return
        if fault.kind == "delay" and self.owner._stopping.wait(fault.seconds):
            self._reset()
            return

        upstream = self._forward(body)
        if upstream is None:
            return
        if fault.kind == "reset_after":
            self._reset()
            return
        code, headers, content = upstream
        self._send(code, headers, content)

    def _read_body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self._send_json(400, f"invalid or too large Content-Length: {length_text!r}")
            return None
        return self.rfile.read(length)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
        owner = self.owner
        connection = http.client.HTTPConnection(
            owner._upstream_host, owner._upstream_port, timeout=owner.timeout
        )
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except OSError as exc:
            logger.warning("fault proxy: upstream %s failed: %s", owner.upstream, exc)
            self._send_json(502, f"fault proxy: upstream {owner.upstream} failed: {exc}")
            return None
        finally:
            connection.close()
        with owner._lock:
            owner.forwarded_count += 1
        response_headers = [
            (name, value) for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP
        ]
        return response.status, response_headers, content

    def _send(self, code: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)
        self.close_connection = True

    def _send_json(self, code: int, message: str, extra: list[tuple[str, str]] | None = None) -> None:
        # Shaped like a Cloudflare API error so that clients parse it as one.
        payload: dict[str, Any] = {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        }
        headers = [("Content-Type", "application/json"), *(extra or [])]
        self._send(code, headers, json.dumps(payload).encode())

    def _send_injected_status(self, code: int, retry_after: float | None) -> None:
        extra = []
        if retry_after is not None:
            # Retry-After takes whole seconds (RFC 9110, 10.2.3).
            extra.append(("Retry-After", str(max(0, round(retry_after)))))
        self._send_json(code, f"fault proxy: injected HTTP {code}", extra)

    def _reset(self) -> None:
        """Close the client connection with a TCP reset and no response."""
        self.close_connection = True
        # Linger on with a timeout of 0 makes close() send RST instead of FIN.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The descriptor closes once the buffered reader is closed too. The
        # writer is unbuffered and left open for the base class to flush.
        self.connection.close()
        self.rfile.close()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fault proxy: %s", format % args)

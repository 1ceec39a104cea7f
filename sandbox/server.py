"""The sandbox's HTTPS transport: a threaded HTTP/1.1 server over TLS that parses bytes into a Request, calls
the app, and writes the `Response` back, injecting the faults a real network and a busy Dataverse produce.

Each connection gets a daemon thread, and the TLS handshake happens in that thread, so a slow or hostile
client never blocks the accept loop. Connections are kept alive (HTTP/1.1); every response with a body
carries Content-Length, and bodies over 1 KiB are gzipped when the client accepts gzip, as Dataverse does.
`Faults` is a mutable dataclass read on every request, so a test can switch a fault on and off while the
server runs (so are `SandboxServer.app` and `.faults`); its seeded RNG makes the fault sequence reproducible
for a given request order, and `only_paths` limits faults to matching paths (e.g. "/api/data/" spares the
token endpoint). A client that disconnects mid-response, or an app that raises, costs one connection or one
500, never the server; stop() closes the listener and every open connection at once.
"""

from __future__ import annotations

import gzip
import logging
import random
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from sandbox.wire import App, Headers, Request, Response, json_response

log = logging.getLogger("l2c.sandbox.server")

GZIP_MIN_BYTES = 1024
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0
# Headers the transport owns: it frames the body itself, so an app's values would be wrong or duplicated.
_TRANSPORT_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class Faults:
    """Injected failures, all off by default. Mutable while the server runs."""

    latency_ms: int = 0  # added to every matching request
    p_503: float = 0.0  # answer 503 with a Dataverse-shaped error body, without calling the app
    p_drop: float = 0.0  # close the connection without sending anything
    p_truncate: float = 0.0  # send headers with the full Content-Length, then part of the body, then close
    timeout_ms: int = 0  # wait this long before answering (exercise client read timeouts)
    seed: int | None = None  # seeded RNG: the same request order gives the same faults
    only_paths: str | None = None  # apply faults only when this substring is in the request path
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "seed" and "_lock" in self.__dict__:
            with self._lock:
                super().__setattr__("_rng", random.Random(value))  # setting the seed restarts the sequence

    def applies_to(self, path: str) -> bool:
        return not self.only_paths or self.only_paths in path

    def roll(self) -> tuple[bool, bool, bool]:
        """(drop, 503, truncate) for one request. Always three draws, so enabling one fault does not shift
        the sequence of another."""
        with self._lock:
            d, u, t = self._rng.random(), self._rng.random(), self._rng.random()
        return d < self.p_drop, u < self.p_503, t < self.p_truncate


def service_unavailable() -> Response:
    # Shape as every Dataverse error ({"error":{"code","message"}}); code and text for a 503 are inferred.
    return json_response(503, {"error": {"code": "0x80040216", "message": "Service Unavailable."}})


def internal_error() -> Response:
    # 0x80040216 is Dataverse's generic "An unexpected error occurred." code.
    return json_response(500, {"error": {"code": "0x80040216", "message": "An unexpected error occurred."}})


def _accepts_gzip(value: str) -> bool:
    for part in value.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            try:
                return not (q.startswith("q=") and float(q[2:] or 0) == 0)
            except ValueError:
                return False
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "l2c-sandbox"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    server: _TLSHTTPServer

    def setup(self) -> None:
        conn: ssl.SSLSocket = self.request
        conn.settimeout(HANDSHAKE_TIMEOUT_S)
        conn.do_handshake()  # raises on a client that does not trust us; handle_error keeps it quiet
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        server = self.server
        faults = server.owner.faults
        body = self._read_body()
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers=Headers(list(self.headers.items())),
            body=body,
            client=f"{self.client_address[0]}:{self.client_address[1]}",
        )
        drop = unavailable = truncate = False
        if faults.applies_to(path):
            drop, unavailable, truncate = faults.roll()
            wait_s = (faults.latency_ms + faults.timeout_ms) / 1000
            if wait_s > 0 and server.stopping.wait(wait_s):
                self._drop()
                return
        if drop:
            self._drop()
            return
        if unavailable:
            response = service_unavailable()
        else:
            try:
                response = server.owner.app(request)
            except Exception:  # the server boundary: a bug in one handler is logged and answered 500, as a
                # real server would, instead of killing the connection thread without a response
                log.exception("sandbox app failed on %s %s", request.method, request.path)
                response = internal_error()
        self._write(request, response, truncate=truncate)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write(self, request: Request, response: Response, *, truncate: bool) -> None:
        body = response.body
        headers = [(k, v) for k, v in response.headers if k.lower() not in _TRANSPORT_HEADERS]
        names = {k.lower() for k, _ in headers}
        if (
            len(body) > GZIP_MIN_BYTES
            and "content-encoding" not in names
            and _accepts_gzip(request.headers.get("Accept-Encoding", ""))
        ):
            body = gzip.compress(body, compresslevel=5)
            headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
        if response.status in _NO_BODY_STATUSES:
            body = b""  # RFC 9110 8.6: no Content-Length on 204/304
        else:
            headers.append(("Content-Length", str(len(body))))
        if self.close_connection or truncate:
            headers.append(("Connection", "close"))
        reason = self.responses.get(response.status, ("",))[0]
        lines = [f"{self.protocol_version} {response.status} {reason}"]
        if "date" not in names:  # one Date field (RFC 9110 6.6.1); an app's own (the org's clock) wins
            lines.append(f"Date: {self.date_time_string()}")
        lines += [f"{name}: {value}" for name, value in headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if request.method == "HEAD":
            body = b""
        if truncate:
            self.wfile.write(head + body[: len(body) // 2])
            self._drop()
            return
        self.wfile.write(head + body)  # one write: no Nagle / delayed-ACK stall between head and body
        self.log_request(response.status, len(body))


class _TLSHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: SandboxServer, context: ssl.SSLContext) -> None:
        self.owner = owner  # app and faults are read from it per request, so both can be swapped live
        self.context = context
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._conn_lock:
            self.connections.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that go away, refuse our certificate or time out are normal traffic for a test server.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.error("unexpected error serving %s", client_address, exc_info=exc)

    def close_all(self) -> None:
        with self._conn_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SandboxServer:
    """HTTPS server for an `App`, on a free loopback port by default. Use as a context manager."""

    def __init__(
        self,
        app: App,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext,
        faults: Faults | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.faults = faults if faults is not None else Faults()
        self._httpd: _TLSHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not started")
        return f"https://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            return self
        self._httpd = _TLSHTTPServer((self.host, self.port), self, self.ssl_context)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="l2c-sandbox", daemon=True
        )
        self._thread.start()
        log.debug("sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()  # wakes requests waiting out an injected latency or timeout
        httpd.shutdown()
        httpd.server_close()
        httpd.close_all()  # idle keep-alive connections would otherwise hold their threads for IDLE_TIMEOUT_S
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["Faults", "SandboxServer", "internal_error", "service_unavailable"]

"""`WebhookServer`: the webhook receiver behind a small standard-library HTTP server, as
``batchor webhooks serve`` runs it."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Self

from batchor.webhooks.receiver import MAX_BODY_BYTES, WebhookReceiver, WebhookResponse

if TYPE_CHECKING:
    from batchor.runner import BatchRunner

log = logging.getLogger("batchor.webhooks")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class _IPv6HTTPServer(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "batchor-webhooks"

    def do_POST(self) -> None:
        length = self.headers.get("content-length")
        if length is None or not length.isdigit():
            self._send(WebhookResponse(411, b'{"error":"a content-length is required"}'))
            return
        if int(length) > MAX_BODY_BYTES:
            self._send(self.server.receiver.too_large())
            return
        body = self.rfile.read(int(length))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self._send(self.server.receiver.handle("POST", body, headers))

    def _not_allowed(self) -> None:
        self._send(self.server.receiver.handle(self.command, b"", {}))

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def _send(self, response: WebhookResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class WebhookServer:
    """Receives OpenAI's ``batch.*`` webhooks over HTTP (a threading server from the
    standard library) and hands each to a `WebhookReceiver`: every path takes POSTed
    deliveries. The socket is bound on construction.

    Use `serve_forever` in the foreground, or `start` and `stop` (or a ``with`` block) to
    serve on a background thread.

    Args:
        runner: The runner whose store holds the runs.
        host: The interface to bind, loopback by default (put a TLS-terminating proxy in
            front to take OpenAI's deliveries from the internet).
        port: The TCP port; ``0`` picks a free one (see `port`).
        secret: The signing secret; default ``$OPENAI_WEBHOOK_SECRET``.

    Raises:
        ConfigurationError: no secret, or a malformed one (before anything is bound).
        OSError: the address cannot be bound.
    """

    def __init__(
        self,
        runner: BatchRunner,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: str | None = None,
    ) -> None:
        """Check the secret, then bind ``host:port``."""
        self.receiver = WebhookReceiver(runner, secret=secret)
        """What handles each delivery (its `WebhookReceiver.outcomes` count them)."""
        server_class = _IPv6HTTPServer if ":" in host else _HTTPServer
        self._httpd = server_class((host, port), _Handler)
        self._httpd.receiver = self.receiver
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The interface served."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The TCP port served."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Where to send deliveries, e.g. ``"http://127.0.0.1:8000/"``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        """Serve in this thread until `stop` (from another thread) or an interrupt."""
        self._httpd.serve_forever(poll_interval=0.1)

    def start(self) -> Self:
        """Serve on a background thread; returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("this webhook server was already started")
        self._thread = threading.Thread(
            target=self.serve_forever, name="batchor-webhooks", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        """Start serving on a background thread, unless already started."""
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.stop()

    def __repr__(self) -> str:
        """Show where it serves."""
        return f"<WebhookServer {self.url}>"

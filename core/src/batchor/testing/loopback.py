"""`LoopbackEmulator`: the lifecycle the provider emulators share.

Each emulator (OpenAI, Anthropic, Gemini) serves HTTP on a background thread, runs a batch
worker and keeps its data in a directory (a temporary one unless given). This base class
starts and stops those; a subclass builds its own stores, worker and server in `_open`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self


class LoopbackServer(Protocol):
    """What the lifecycle needs of an emulator's HTTP server."""

    server_address: Any

    def serve_forever(self, poll_interval: float = ...) -> None:
        """Serve until `shutdown`."""

    def shutdown(self) -> None:
        """Stop `serve_forever`."""

    def close_connections(self) -> None:
        """Drop every open connection."""

    def server_close(self) -> None:
        """Close the listening socket."""


class LoopbackWorker(Protocol):
    """What the lifecycle needs of an emulator's batch worker."""

    def start(self) -> None:
        """Start working on a background thread."""

    def stop(self) -> None:
        """Stop working and wait for the thread."""


class LoopbackEmulator:
    """Starts and stops an emulator's HTTP server, its batch worker and its data directory.

    A subclass sets `_temp_prefix` and `_thread_name`, builds its parts in `_open`, and may
    act once the server is bound (`_bound`) or once the worker has stopped (`_worker_stopped`).
    """

    _temp_prefix: ClassVar[str]
    _thread_name: ClassVar[str]

    def __init__(self, port: int, data_dir: str | os.PathLike[str] | None, host: str) -> None:
        """Remember where to serve and keep data; nothing runs until `start`."""
        self.host = host
        """The interface the server binds."""
        self._requested_port = port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: Path | None = None
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._worker: LoopbackWorker | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The TCP port being served (the requested one before `start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def base_url(self) -> str:
        """The SDK base URL."""
        raise NotImplementedError

    def _origin(self) -> str:
        """``http://host:port`` of the server (IPv6 hosts bracketed)."""
        if self._server is None and self._requested_port == 0:
            raise RuntimeError("the emulator picks its port on start(); start it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _open(self, root: Path) -> tuple[LoopbackServer, LoopbackWorker]:
        """Build the stores, the worker and the (bound, not yet serving) server over ``root``."""
        raise NotImplementedError

    def _bound(self) -> None:
        """Act once the server is bound (its port known), before the worker starts."""

    def _worker_stopped(self) -> None:
        """Act once the worker has stopped, before the temporary directory is removed."""

    def start(self) -> Self:
        """Start serving on a background thread; return ``self``."""
        with self._lock:
            if self._server is not None or self._worker is not None:
                raise RuntimeError("this emulator was already started")
            if self._data_dir is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix=self._temp_prefix))
            root = self._data_dir or self._temp_dir
            assert root is not None
            server, worker = self._open(root)
            self._server, self._worker = server, worker
            self._bound()
            worker.start()
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self._thread_name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and remove the temporary data directory."""
        with self._lock:
            server, thread, worker = self._server, self._thread, self._worker
            if server is None:
                return
            server.shutdown()
            server.close_connections()
            server.server_close()
            if thread is not None:
                thread.join(timeout=10)
            if worker is not None:
                worker.stop()
            self._worker_stopped()
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            self._server = self._thread = None

    def __enter__(self) -> Self:
        """Start the emulator if it is not running yet."""
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the emulator."""
        self.stop()

    def __repr__(self) -> str:
        """Show where the emulator serves."""
        where = self.base_url if self._server is not None else "not running"
        return f"<{type(self).__name__} {where}>"


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can drop every open connection when it stops.

    Provider-neutral: each emulator passes its own request handler class.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        """Bind to ``address`` (IPv4 or IPv6) and serve each connection with ``handler``."""
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection, then serve it on its own thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection and close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open (e.g. idle keep-alive) connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

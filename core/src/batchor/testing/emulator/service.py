"""`OpenAIBatchEmulator`: starts and stops the HTTP server, the batch worker and the file store."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from batchor.testing.emulator.batches import BatchStore
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.files import FileStore
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.server import EmulatorHTTPServer, ServerState
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.emulator.worker import BatchWorker

DEFAULT_API_KEY = "sk-emulator"
"""The key `OpenAIBatchEmulator.api_key` reports when no ``api_key`` is given."""


class OpenAIBatchEmulator:
    """A local, loopback HTTP emulator of the OpenAI Files and Batches API.

    Point the official SDK at it with ``OpenAI(base_url=emu.base_url, api_key=emu.api_key)``.
    The same server also speaks Azure OpenAI's URL shape: ``AzureOpenAI(azure_endpoint=
    emu.azure_endpoint, api_key=emu.api_key, api_version="2024-10-21")`` (see `azure_endpoint`;
    pass Azure's limits through ``limits`` to behave as Azure does). Use it as a context
    manager, or call `start` and `stop`.

    Args:
        port: TCP port to listen on; ``0`` picks a free one.
        faults: Fault injection knobs (`EmulatorFaults`); all off by default. Kept live as
            `faults`, so tests may change it between calls.
        phase_seconds: Minimum time a batch spends in each of ``validating``,
            ``in_progress``, ``finalizing`` (and ``cancelling``); ``0`` is as fast as possible.
        data_dir: Directory to store files in; by default a temporary directory that is
            removed on `stop` (a given directory is left in place).
        api_key: If given, the only API key accepted (others get 401), as a bearer token or an
            Azure ``api-key`` header; otherwise any key is accepted and `api_key` is
            ``"sk-emulator"``.
        host: Interface to bind, loopback by default.
        limits: Size and count limits; the real service's limits by default.
    """

    def __init__(
        self,
        port: int = 0,
        faults: EmulatorFaults | None = None,
        phase_seconds: float = 0.0,
        data_dir: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        limits: EmulatorLimits | None = None,
    ) -> None:
        """Configure the emulator; nothing runs until `start`."""
        self.faults: EmulatorFaults = faults if faults is not None else EmulatorFaults()
        """The live fault knobs."""
        self.stats = EmulatorStats()
        """Counters of calls, batches and answered lines."""
        self.api_key: str = api_key if api_key is not None else DEFAULT_API_KEY
        """The API key clients should use."""
        self.phase_seconds = phase_seconds
        """Minimum seconds a batch spends in each processing phase."""
        self.limits: EmulatorLimits = limits if limits is not None else EmulatorLimits()
        """The limits being enforced."""
        self.host = host
        """The interface the server binds."""
        self._requested_port = port
        self._required_key = api_key
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: Path | None = None
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._worker: BatchWorker | None = None
        self._file_store: FileStore | None = None
        self._batch_store: BatchStore | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The TCP port being served (the requested one before `start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def base_url(self) -> str:
        """The SDK base URL, e.g. ``"http://127.0.0.1:8000/v1"``."""
        return self._origin() + "/v1"

    @property
    def azure_endpoint(self) -> str:
        """The Azure OpenAI endpoint, e.g. ``"http://127.0.0.1:8000"``.

        Pass it as ``AzureOpenAI(azure_endpoint=..., api_key=emu.api_key, api_version=...)``:
        the SDK then calls ``/openai/files``, ``/openai/batches`` and so on with an
        ``api-version`` query parameter and an ``api-key`` header (or, with an Entra ID token,
        ``Authorization: Bearer``).
        """
        return self._origin()

    @property
    def azure_v1_base_url(self) -> str:
        """The base URL of Azure OpenAI's v1 API, e.g. ``"http://127.0.0.1:8000/openai/v1"``.

        Use it with the plain client: ``OpenAI(base_url=..., api_key=emu.api_key)``.
        """
        return self._origin() + "/openai/v1"

    def _origin(self) -> str:
        if self._server is None and self._requested_port == 0:
            raise RuntimeError("the emulator picks its port on start(); start it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def data_dir(self) -> Path | None:
        """Where files are stored (``None`` before `start`)."""
        return self._file_store.root if self._file_store is not None else None

    def start(self) -> Self:
        """Start serving on a background thread; return ``self``."""
        with self._lock:
            if self._server is not None or self._worker is not None:
                raise RuntimeError("this emulator was already started")
            if self._data_dir is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="batchor-emulator-"))
            root = self._data_dir or self._temp_dir
            assert root is not None
            self._file_store = files = FileStore(root)
            self._batch_store = batches = BatchStore()
            self._worker = worker = BatchWorker(
                store=batches,
                files=files,
                stats=self.stats,
                faults=lambda: self.faults,
                limits=self.limits,
                phase_seconds=self.phase_seconds,
            )
            state = ServerState(
                files=files,
                batches=batches,
                worker=worker,
                stats=self.stats,
                limits=self.limits,
                faults=lambda: self.faults,
                api_key=self._required_key,
            )
            self._server = server = EmulatorHTTPServer((self.host, self._requested_port), state)
            worker.start()
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="batch-emulator-http",
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
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            self._server = self._thread = None

    def batches(self) -> list[dict[str, Any]]:
        """Every batch as its API JSON dict, oldest first."""
        return self._batch_store.all() if self._batch_store is not None else []

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (uploads and batch outputs) as its API JSON dict, oldest first."""
        if self._file_store is None:
            return []
        return [stored.to_dict() for stored in self._file_store.all()]

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
        return f"<OpenAIBatchEmulator {where}>"

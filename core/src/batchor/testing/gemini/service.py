"""`GeminiBatchEmulator`: starts and stops the HTTP server, the batch worker and the stores."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from batchor.testing.emulator.limits import MIB, EmulatorLimits
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.gemini.batches import GeminiBatchStore
from batchor.testing.gemini.faults import GeminiFaults
from batchor.testing.gemini.files import GeminiFileStore
from batchor.testing.gemini.server import GeminiHTTPServer, GeminiState
from batchor.testing.gemini.worker import GeminiWorker

DEFAULT_API_KEY = "gemini-emulator-key"
"""The key `GeminiBatchEmulator.api_key` reports when no ``api_key`` is given."""
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
"""The environment variable google-genai reads its Gemini API base URL from."""
API_KEY_ENV = "GEMINI_API_KEY"
"""The environment variable google-genai reads its API key from (after ``GOOGLE_API_KEY``)."""


def gemini_limits(**overrides: int) -> EmulatorLimits:
    """The Gemini API's limits: input files up to 2 GB (the Files API's per-file limit too);
    no documented cap on the number of requests (the emulator's is ten million)."""
    values: dict[str, int] = {
        "max_upload_bytes": 2048 * MIB,
        "max_batch_input_bytes": 2048 * MIB,
        "max_batch_lines": 10_000_000,
        "max_json_body_bytes": 20 * MIB,
    }
    values.update(overrides)
    return EmulatorLimits(**values)


class GeminiBatchEmulator:
    """A local, loopback HTTP emulator of the Gemini API's Batch Mode and Files API.

    Point the official SDK at it with ``genai.Client(api_key=emu.api_key,
    http_options=genai.types.HttpOptions(base_url=emu.base_url))`` (or set the environment
    variables in `environment`). Use it as a context manager, or call `start` and `stop`.

    Args:
        port: TCP port to listen on; ``0`` picks a free one.
        faults: Fault injection knobs (`GeminiFaults`); all off by default. Kept live as
            `faults`, so tests may change it between calls.
        phase_seconds: Minimum time a batch spends ``BATCH_STATE_PENDING`` and then
            ``BATCH_STATE_RUNNING`` (its lines are answered over that time), and between a
            cancel and ``BATCH_STATE_CANCELLED``; ``0`` is as fast as possible.
        data_dir: Directory to store files in; by default a temporary directory that is
            removed on `stop` (a given directory is left in place).
        api_key: If given, the only API key accepted (others get the API's 400
            ``API_KEY_INVALID``); otherwise any non-empty key is accepted and `api_key` is
            ``"gemini-emulator-key"``.
        host: Interface to bind, loopback by default.
        limits: Size and count limits; the Gemini API's by default (`gemini_limits`).
        model_prefixes: A batch's model id must start with one of these, or creating it is a
            404 (the API's answer to an unknown model).
    """

    def __init__(
        self,
        port: int = 0,
        faults: GeminiFaults | None = None,
        phase_seconds: float = 0.0,
        data_dir: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        limits: EmulatorLimits | None = None,
        model_prefixes: tuple[str, ...] = ("gemini-", "gemma-"),
    ) -> None:
        """Configure the emulator; nothing runs until `start`."""
        self.faults: GeminiFaults = faults if faults is not None else GeminiFaults()
        """The live fault knobs."""
        self.stats = EmulatorStats()
        """Counters of calls, batches (by ``display_name`` and ``model``) and answered keys."""
        self.api_key: str = api_key if api_key is not None else DEFAULT_API_KEY
        """The API key clients should use."""
        self.phase_seconds = phase_seconds
        """Minimum seconds a batch spends in each state before its end."""
        self.limits: EmulatorLimits = limits if limits is not None else gemini_limits()
        """The limits being enforced."""
        self.host = host
        """The interface the server binds."""
        self.model_prefixes = model_prefixes
        self._requested_port = port
        self._required_key = api_key
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: Path | None = None
        self._server: GeminiHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._worker: GeminiWorker | None = None
        self._file_store: GeminiFileStore | None = None
        self._batch_store: GeminiBatchStore | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The TCP port being served (the requested one before `start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def base_url(self) -> str:
        """The SDK base URL, e.g. ``"http://127.0.0.1:8000"`` (the SDK adds the version)."""
        if self._server is None and self._requested_port == 0:
            raise RuntimeError("the emulator picks its port on start(); start it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def environment(self) -> dict[str, str]:
        """The environment variables that point google-genai's ``Client()`` here."""
        return {API_KEY_ENV: self.api_key, BASE_URL_ENV: self.base_url}

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
                self._temp_dir = Path(tempfile.mkdtemp(prefix="batchor-gemini-"))
            root = self._data_dir or self._temp_dir
            assert root is not None
            self._file_store = files = GeminiFileStore(root)
            self._batch_store = batches = GeminiBatchStore()
            self._worker = worker = GeminiWorker(
                store=batches,
                files=files,
                stats=self.stats,
                faults=lambda: self.faults,
                limits=self.limits,
                phase_seconds=self.phase_seconds,
            )
            state = GeminiState(
                files=files,
                batches=batches,
                worker=worker,
                stats=self.stats,
                limits=self.limits,
                faults=lambda: self.faults,
                api_key=self._required_key,
                model_prefixes=self.model_prefixes,
            )
            self._server = server = GeminiHTTPServer((self.host, self._requested_port), state)
            worker.start()
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="gemini-emulator-http",
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
            if self._file_store is not None:
                self._file_store.discard_uploads()
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            self._server = self._thread = None

    def batches(self) -> list[dict[str, Any]]:
        """Every batch (not deleted) as its REST operation JSON, oldest first."""
        return self._batch_store.all() if self._batch_store is not None else []

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (uploads and batch outputs) as its REST JSON, oldest first."""
        if self._file_store is None:
            return []
        origin = self.base_url
        return [stored.to_dict(origin) for stored in self._file_store.all()]

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
        return f"<GeminiBatchEmulator {where}>"

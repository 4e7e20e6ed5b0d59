"""`GeminiBatchEmulator`: starts and stops the HTTP server, the batch worker and the stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchor.testing.emulator.limits import MIB, EmulatorLimits
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.gemini.batches import GeminiBatchStore
from batchor.testing.gemini.faults import GeminiFaults
from batchor.testing.gemini.files import GeminiFileStore
from batchor.testing.gemini.server import GeminiHTTPServer, GeminiState
from batchor.testing.gemini.sync import GeminiSyncService
from batchor.testing.gemini.worker import GeminiWorker
from batchor.testing.loopback import LoopbackEmulator, LoopbackServer, LoopbackWorker

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


class GeminiBatchEmulator(LoopbackEmulator):
    """A local, loopback HTTP emulator of the Gemini API's Batch Mode and Files API, and of
    its synchronous ``generateContent`` (each request answered as a batch line carrying it,
    under per-model rate limits: `batchor.testing.gemini.sync`).

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
            ``requests_per_minute`` and ``tokens_per_minute`` (input tokens) are the
            per-model rate limits of ``generateContent``, refilled over ``rate_window``.
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
        super().__init__(port, data_dir, host)
        self.faults: GeminiFaults = faults if faults is not None else GeminiFaults()
        """The live fault knobs."""
        self.stats = EmulatorStats()
        """Counters of calls, batches (by ``display_name`` and ``model``), answered keys and
        synchronous requests (keyed by `batchor.testing.gemini.sync.GENERATE`)."""
        self.api_key: str = api_key if api_key is not None else DEFAULT_API_KEY
        """The API key clients should use."""
        self.phase_seconds = phase_seconds
        """Minimum seconds a batch spends in each state before its end."""
        self.limits: EmulatorLimits = limits if limits is not None else gemini_limits()
        """The limits being enforced."""
        self.model_prefixes = model_prefixes
        self._required_key = api_key
        self._file_store: GeminiFileStore | None = None
        self._batch_store: GeminiBatchStore | None = None

    @property
    def base_url(self) -> str:
        """The SDK base URL, e.g. ``"http://127.0.0.1:8000"`` (the SDK adds the version)."""
        return self._origin()

    @property
    def environment(self) -> dict[str, str]:
        """The environment variables that point google-genai's ``Client()`` here."""
        return {API_KEY_ENV: self.api_key, BASE_URL_ENV: self.base_url}

    @property
    def data_dir(self) -> Path | None:
        """Where files are stored (``None`` before `start`)."""
        return self._file_store.root if self._file_store is not None else None

    _temp_prefix = "batchor-gemini-"
    _thread_name = "gemini-emulator-http"

    def _open(self, root: Path) -> tuple[LoopbackServer, LoopbackWorker]:
        """Build the file and batch stores, the worker and the server over ``root``."""
        self._file_store = files = GeminiFileStore(root)
        self._batch_store = batches = GeminiBatchStore()
        worker = GeminiWorker(
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
            sync=GeminiSyncService(self.stats, lambda: self.faults, lambda: self.limits),
        )
        return GeminiHTTPServer((self.host, self._requested_port), state), worker

    def _worker_stopped(self) -> None:
        """Drop the uploads still open."""
        if self._file_store is not None:
            self._file_store.discard_uploads()

    def batches(self) -> list[dict[str, Any]]:
        """Every batch (not deleted) as its REST operation JSON, oldest first."""
        return self._batch_store.all() if self._batch_store is not None else []

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (uploads and batch outputs) as its REST JSON, oldest first."""
        if self._file_store is None:
            return []
        origin = self.base_url
        return [stored.to_dict(origin) for stored in self._file_store.all()]

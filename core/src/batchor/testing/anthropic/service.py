"""`AnthropicBatchEmulator`: starts and stops the HTTP server and the batch worker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from batchor.testing.anthropic.batches import BatchStore
from batchor.testing.anthropic.faults import AnthropicEmulatorFaults
from batchor.testing.anthropic.limits import AnthropicEmulatorLimits
from batchor.testing.anthropic.replies import Replier
from batchor.testing.anthropic.server import AnthropicHTTPServer, AnthropicState
from batchor.testing.anthropic.sync import AnthropicSyncService
from batchor.testing.anthropic.worker import AnthropicBatchWorker
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.loopback import LoopbackEmulator, LoopbackServer, LoopbackWorker

DEFAULT_API_KEY = "sk-ant-emulator"
"""The key `AnthropicBatchEmulator.api_key` reports when no ``api_key`` is given."""


class AnthropicBatchEmulator(LoopbackEmulator):
    """A local, loopback HTTP emulator of the Anthropic Message Batches API, and of the
    synchronous ``POST /v1/messages`` (answered as a batch answers the same request, under
    the per-minute rate limits of `limits`).

    Point the official SDK at it with ``Anthropic(base_url=emu.base_url,
    api_key=emu.api_key)``. Use it as a context manager, or call `start` and `stop`.

    Args:
        port: TCP port to listen on; ``0`` picks a free one.
        faults: Fault injection knobs (`AnthropicEmulatorFaults`); all off by default. Kept
            live as `faults`, so tests may change it between calls.
        phase_seconds: Least time a batch spends ``in_progress`` (its answers spread over
            it) and ``canceling``; ``0`` is as fast as possible.
        data_dir: Directory to keep batches' requests and results in; by default a temporary
            directory that is removed on `stop` (a given directory is left in place).
        api_key: If given, the only API key accepted (others get 401), as an ``x-api-key``
            header or a bearer token; otherwise any key is accepted and `api_key` is
            ``"sk-ant-emulator"``.
        host: Interface to bind, loopback by default.
        limits: Size, count and rate limits; the real service's limits by default. Kept live
            as `limits`: the synchronous endpoint's rate limits follow a change.
    """

    def __init__(
        self,
        port: int = 0,
        faults: AnthropicEmulatorFaults | None = None,
        phase_seconds: float = 0.0,
        data_dir: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        limits: AnthropicEmulatorLimits | None = None,
    ) -> None:
        """Configure the emulator; nothing runs until `start`."""
        super().__init__(port, data_dir, host)
        self.faults: AnthropicEmulatorFaults = (
            faults if faults is not None else AnthropicEmulatorFaults()
        )
        """The live fault knobs."""
        self.stats = EmulatorStats()
        """Counters of calls (keyed like ``("POST", "/v1/messages/batches")``), batches,
        answered batch requests and synchronous requests (``sync_answered`` keyed
        ``"/v1/messages"``, ``sync_tokens``, ``sync_rate_limited``)."""
        self.api_key: str = api_key if api_key is not None else DEFAULT_API_KEY
        """The API key clients should use."""
        self.phase_seconds = phase_seconds
        """Least seconds a batch spends in each processing phase."""
        self.limits: AnthropicEmulatorLimits = (
            limits if limits is not None else AnthropicEmulatorLimits()
        )
        """The limits being enforced."""
        self._required_key = api_key
        self._store: BatchStore | None = None

    @property
    def base_url(self) -> str:
        """The SDK base URL, e.g. ``"http://127.0.0.1:8000"`` (the SDK adds ``/v1/...``)."""
        return self._origin()

    def environment(self) -> str:
        """The environment that points the SDK here:
        ``"ANTHROPIC_BASE_URL=... ANTHROPIC_API_KEY=..."``."""
        return f"ANTHROPIC_BASE_URL={self.base_url} ANTHROPIC_API_KEY={self.api_key}"

    @property
    def data_dir(self) -> Path | None:
        """Where batches' files are kept (``None`` before `start`)."""
        return self._data_dir or self._temp_dir

    _temp_prefix = "batchor-anthropic-emulator-"
    _thread_name = "anthropic-emulator-http"

    def _open(self, root: Path) -> tuple[LoopbackServer, LoopbackWorker]:
        """Build the batch store, the worker and the server over ``root``."""
        root.mkdir(parents=True, exist_ok=True)
        self._store = store = BatchStore(root)
        worker = AnthropicBatchWorker(
            store=store,
            stats=self.stats,
            faults=lambda: self.faults,
            replier=Replier(self.limits.min_cacheable_tokens),
            phase_seconds=self.phase_seconds,
        )
        state = AnthropicState(
            batches=store,
            worker=worker,
            stats=self.stats,
            limits=self.limits,
            faults=lambda: self.faults,
            api_key=self._required_key,
            sync=AnthropicSyncService(self.stats, lambda: self.faults, lambda: self.limits),
        )
        return AnthropicHTTPServer((self.host, self._requested_port), state), worker

    def _bound(self) -> None:
        """Tell the store the URL its batches' ``results_url`` point at."""
        assert self._store is not None
        self._store.base_url = self.base_url

    def batches(self) -> list[dict[str, Any]]:
        """Every batch (deleted ones aside) as its API JSON dict, oldest first."""
        return self._store.all() if self._store is not None else []

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """The result lines of an ended batch, parsed, in the order they are served."""
        if self._store is None:
            return []
        record = self._store.get(batch_id)
        if self._store.snapshot(record)["processing_status"] != "ended":
            raise RuntimeError(f"batch {batch_id} has not ended")
        with record.results.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

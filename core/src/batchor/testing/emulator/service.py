"""`OpenAIBatchEmulator`: starts and stops the HTTP server, the batch worker and the file store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchor.testing.emulator.batches import BatchStore
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.files import FileStore
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.server import EmulatorHTTPServer, ServerState
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.emulator.sync import SyncService
from batchor.testing.emulator.webhooks import WebhookSender, new_webhook_secret
from batchor.testing.emulator.worker import BatchWorker
from batchor.testing.loopback import LoopbackEmulator, LoopbackServer, LoopbackWorker

DEFAULT_API_KEY = "sk-emulator"
"""The key `OpenAIBatchEmulator.api_key` reports when no ``api_key`` is given."""


class OpenAIBatchEmulator(LoopbackEmulator):
    """A local, loopback HTTP emulator of the OpenAI Files and Batches API.

    It also answers ``POST /v1/responses``, ``/v1/chat/completions`` and ``/v1/embeddings``
    synchronously, each request as a batch line with the same body would be answered, under
    the per-model rate limits of `limits` (read live, so tests may replace `limits`).

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
        webhook_url: If given, each batch that ends is announced there as OpenAI does: a
            signed ``batch.completed``, ``batch.failed``, ``batch.expired`` or
            ``batch.cancelled`` event POSTed from a background thread, retried with backoff
            until answered 2xx (see `batchor.testing.emulator.webhooks`; counted in
            `EmulatorStats.webhooks_sent` and `EmulatorStats.webhooks_delivered`).
        webhook_secret: The ``whsec_...`` secret the events are signed with; a new one (see
            `webhook_secret`) when ``webhook_url`` is given without it.
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
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        """Configure the emulator; nothing runs until `start`."""
        super().__init__(port, data_dir, host)
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
        self._required_key = api_key
        self._file_store: FileStore | None = None
        self._batch_store: BatchStore | None = None
        self.webhook_url = webhook_url
        """Where batch events are POSTed, if anywhere (read on `start`)."""
        if webhook_url is not None and webhook_secret is None:
            webhook_secret = new_webhook_secret()
        self.webhook_secret: str | None = webhook_secret
        """The secret batch events are signed with (give it to the receiver)."""
        self._webhooks: WebhookSender | None = None

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

    @property
    def data_dir(self) -> Path | None:
        """Where files are stored (``None`` before `start`)."""
        return self._file_store.root if self._file_store is not None else None

    _temp_prefix = "batchor-emulator-"
    _thread_name = "batch-emulator-http"

    def _open(self, root: Path) -> tuple[LoopbackServer, LoopbackWorker]:
        """Build the file and batch stores, the worker and the server over ``root``."""
        self._file_store = files = FileStore(root)
        if self.webhook_url is not None and self.webhook_secret is not None:
            self._webhooks = WebhookSender(self.webhook_url, self.webhook_secret, self.stats)
        on_end = self._webhooks.batch_ended if self._webhooks is not None else None
        self._batch_store = batches = BatchStore(on_end=on_end)
        worker = BatchWorker(
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
            sync=SyncService(self.stats, lambda: self.faults, lambda: self.limits),
        )
        return EmulatorHTTPServer((self.host, self._requested_port), state), worker

    def _bound(self) -> None:
        """Start sending webhook events, if asked to."""
        if self._webhooks is not None:
            self._webhooks.start()

    def _worker_stopped(self) -> None:
        """Stop sending webhook events (no batch ends any more)."""
        if self._webhooks is not None:
            self._webhooks.stop()
            self._webhooks = None

    def batches(self) -> list[dict[str, Any]]:
        """Every batch as its API JSON dict, oldest first."""
        return self._batch_store.all() if self._batch_store is not None else []

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (uploads and batch outputs) as its API JSON dict, oldest first."""
        if self._file_store is None:
            return []
        return [stored.to_dict() for stored in self._file_store.all()]

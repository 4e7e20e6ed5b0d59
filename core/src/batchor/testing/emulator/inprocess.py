"""`InProcessBatchTransport`: the emulator's stores and batch worker behind direct calls, no HTTP.

It implements the `BatchTransport` port with the semantics `OpenAITransport` has against an
`OpenAIBatchEmulator`: every call runs what the emulator's route does (validation, limits,
fault knobs, stats counters) and reports an error as the exception the HTTP transport raises
for the same HTTP answer, with the same message.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from batchor.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    TransientProviderError,
)
from batchor.providers.base import ProviderBatch
from batchor.testing.emulator.batches import BatchStore, parse_batch_request
from batchor.testing.emulator.errors import ApiError, bad_request, not_found, server_error
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.files import FileStore, StoredFile
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.emulator.worker import BatchWorker

_CHUNK = 1 << 20  # bytes copied at a time, as the HTTP transport streams downloads
_PAGE = 100  # list page size the HTTP transport asks for


@dataclass(frozen=True)
class _Core:
    files: FileStore
    batches: BatchStore
    worker: BatchWorker


class InProcessBatchTransport:
    """An emulated provider in the calling process: a `BatchTransport` that needs no socket.

    Each call does what ``OpenAITransport`` (with ``max_retries=0``) does over HTTP against
    an `OpenAIBatchEmulator` with the same knobs: the same validation and limits, the same
    fault knobs consumed by the same calls, the same `EmulatorStats` counters (calls keyed by
    the HTTP route they stand for, e.g. ``("POST", "/v1/batches")``), and the same exceptions
    with the same messages. Batches run on the emulator's background worker.

    Use it as a context manager, or call `start` and `stop`.

    Args:
        faults: Fault injection knobs (`EmulatorFaults`); all off by default. Kept live as
            `faults`, so tests may change it between calls.
        limits: Size and count limits; the real service's limits by default.
        phase_seconds: Minimum time a batch spends in each of ``validating``,
            ``in_progress``, ``finalizing`` (and ``cancelling``); ``0`` is as fast as possible.
        data_dir: Directory to store files in; by default a temporary directory that is
            removed on `stop` (a given directory is left in place).
    """

    def __init__(
        self,
        faults: EmulatorFaults | None = None,
        limits: EmulatorLimits | None = None,
        phase_seconds: float = 0.0,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Configure the transport; nothing runs until `start`."""
        self.inline_requests = False
        """Requests are uploaded as a file first (as OpenAI's)."""
        self.tags_batches = True
        """Batches keep their metadata (as OpenAI's)."""
        self.faults: EmulatorFaults = faults if faults is not None else EmulatorFaults()
        """The live fault knobs."""
        self.stats = EmulatorStats()
        """Counters of calls (keyed by the HTTP route each call stands for), batches and
        answered lines."""
        self.limits: EmulatorLimits = limits if limits is not None else EmulatorLimits()
        """The limits being enforced."""
        self.phase_seconds = phase_seconds
        """Minimum seconds a batch spends in each processing phase."""
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: Path | None = None
        self._core: _Core | None = None
        self._running = False
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path | None:
        """Where files are stored (``None`` before `start`)."""
        return self._core.files.root if self._core is not None else None

    def start(self) -> Self:
        """Start the batch worker; return ``self``."""
        with self._lock:
            if self._core is not None:
                raise RuntimeError("this transport was already started")
            if self._data_dir is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="batchor-emulator-"))
            root = self._data_dir or self._temp_dir
            assert root is not None
            files = FileStore(root)
            batches = BatchStore()
            worker = BatchWorker(
                store=batches,
                files=files,
                stats=self.stats,
                faults=lambda: self.faults,
                limits=self.limits,
                phase_seconds=self.phase_seconds,
            )
            self._core = _Core(files=files, batches=batches, worker=worker)
            worker.start()
            self._running = True
        return self

    def stop(self) -> None:
        """Stop the batch worker and remove the temporary data directory (calls then fail)."""
        with self._lock:
            if not self._running or self._core is None:
                return
            self._running = False
            self._core.worker.stop()
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    def __enter__(self) -> Self:
        """Start the transport if it is not running yet."""
        if self._core is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the transport."""
        self.stop()

    def __repr__(self) -> str:
        """Show whether the transport is running."""
        return f"<InProcessBatchTransport {'running' if self._running else 'not running'}>"

    def batches(self) -> list[dict[str, Any]]:
        """Every batch as its API JSON dict, oldest first."""
        return self._core.batches.all() if self._core is not None else []

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (uploads and batch outputs) as its API JSON dict, oldest first."""
        if self._core is None:
            return []
        return [stored.to_dict() for stored in self._core.files.all()]

    # -- the BatchTransport port --------------------------------------------------------------

    def check_credentials(self) -> None:
        """Nothing to check: no key is needed in process."""

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        """``POST /v1/files`` with purpose ``batch``: store ``content`` (read from its start)."""
        content.seek(0)
        with self._call("POST", "/v1/files") as core:
            limit = self.limits.max_upload_bytes
            path = core.files.scratch_path("upload")
            size = 0
            try:
                with path.open("wb") as out:
                    while chunk := content.read(_CHUNK):
                        size += len(chunk)
                        if size <= limit:
                            out.write(chunk)
                if size > limit:
                    raise bad_request(
                        f"File is too large: {size} bytes. The maximum file size is {limit} bytes.",
                        param="file",
                        code="file_too_large",
                    )
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return core.files.add(path, filename or "file", "batch").id

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        """Batch input files named ``filename`` created since ``created_after``, newest first."""
        found: list[str] = []
        after: str | None = None
        while True:
            with self._call("GET", "/v1/files") as core:
                page, has_more = core.files.page(
                    purpose="batch", limit=_PAGE, after=after, order="desc"
                )
            for stored in page:
                if stored.created_at < created_after:
                    return found
                if stored.filename == filename:
                    found.append(stored.id)
            if not page or not has_more:
                return found
            after = page[-1].id

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        """``POST /v1/batches``: record the batch and hand it to the worker (``validating``)."""
        payload = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }
        with self._call("POST", "/v1/batches") as core:
            size = len(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
            limit = self.limits.max_json_body_bytes
            if size > limit:
                raise ApiError(
                    400, f"Malformed request body: request body is larger than {limit} bytes"
                )
            faults = self.faults
            if faults.take_create_insufficient_quota():
                raise ApiError(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    type="insufficient_quota",
                    code="insufficient_quota",
                )
            if faults.take_create_rate_limit():
                raise ApiError(
                    429,
                    "Rate limit reached for batch creation. Please try again later.",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                )
            if faults.take_create_reject():
                raise bad_request(
                    "The batch was refused: its input file is not a valid batch input.",
                    param="input_file_id",
                    code="invalid_batch_input",
                )
            request = parse_batch_request(payload, core.files)
            record = core.batches.create(request, faults.take_batch_outcome())
            self.stats.record_batch(request.metadata)
            answer = core.batches.snapshot(record)
            core.worker.submit(record)
            if faults.create_response_delay > 0:
                time.sleep(faults.create_response_delay)
        return _to_provider_batch(answer)

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """``GET /v1/batches/{id}``: the batch's current state."""
        _require_id("batch_id", batch_id)
        with self._call("GET", "/v1/batches/{id}") as core:
            answer = core.batches.snapshot(core.batches.get(batch_id))
        return _to_provider_batch(answer)

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        """``GET /v1/batches`` page by page: batches newest first, until one created before
        ``created_after``."""
        after: str | None = None
        while True:
            with self._call("GET", "/v1/batches") as core:
                page, has_more = core.batches.page(after=after, limit=_PAGE)
            for data in page:
                if data["created_at"] < created_after:
                    return
                yield _to_provider_batch(data)
            if not page or not has_more:
                return
            after = page[-1]["id"]

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """``POST /v1/batches/{id}/cancel``: move the batch to ``cancelling``."""
        _require_id("batch_id", batch_id)
        with self._call("POST", "/v1/batches/{id}/cancel") as core:
            record, newly = core.batches.request_cancel(batch_id)
            if newly:
                core.worker.cancel(batch_id)
            answer = core.batches.snapshot(record)
        return _to_provider_batch(answer)

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        """``GET /v1/files/{id}/content``: copy the file into ``dest`` (emptied first) in 1 MiB
        chunks. A file not served (yet) is a `TransientProviderError`."""
        _require_id("file_id", file_id)
        dest.seek(0)
        dest.truncate()
        try:
            with self._call("GET", "/v1/files/{id}/content") as core:
                stored = _served(core.files, file_id)
                try:
                    handle = stored.path.open("rb")
                except FileNotFoundError as exc:  # deleted while we were looking
                    raise not_found(f"No such File object: {file_id}") from exc
                written = 0
                with handle:
                    while chunk := handle.read(_CHUNK):
                        dest.write(chunk)
                        written += len(chunk)
                return written
        except ProviderError as exc:
            if _status(exc) == 404:
                raise TransientProviderError(f"file {file_id} is not available yet") from exc
            raise

    def delete_file(self, file_id: str) -> None:
        """``DELETE /v1/files/{id}``; a file already gone is fine."""
        _require_id("file_id", file_id)
        try:
            with self._call("DELETE", "/v1/files/{id}") as core:
                if not core.files.delete(file_id):
                    raise not_found(f"No such File object: {file_id}")
        except ProviderError as exc:
            if _status(exc) != 404:
                raise

    # -- what the HTTP server does around every route -----------------------------------------

    @contextmanager
    def _call(self, method: str, route: str) -> Iterator[_Core]:
        """One call to ``route``: count it, apply latency and the server-error knobs, and
        raise an `ApiError` from the route as the HTTP transport's exception."""
        core = self._core
        if core is None or not self._running:
            raise RuntimeError(
                "InProcessBatchTransport is not running: use it as a context manager or call "
                "start() first"
            )
        self.stats.record_call(method, route)
        try:
            faults = self.faults
            if faults.latency > 0:
                time.sleep(faults.latency)
            if faults.take_http_server_error() or faults.take_route_server_error(method, route):
                raise server_error()
            yield core
        except ApiError as exc:
            raise _translate(exc) from exc


def _served(files: FileStore, file_id: str) -> StoredFile:
    """The file to read: 404 if unknown or not available yet (a batch's output)."""
    stored = files.get(file_id)
    if stored is None or not stored.available():
        raise not_found(f"No such File object: {file_id}")
    return stored


def _require_id(name: str, value: str) -> None:
    """Refuse an empty id before any call, as the SDK does."""
    if not value:
        raise ValueError(f"Expected a non-empty value for `{name}` but received {value!r}")


def _status(exc: ProviderError) -> int | None:
    """The HTTP status of the emulated answer behind ``exc``, if it came from one."""
    cause = exc.__cause__
    return cause.status if isinstance(cause, ApiError) else None


def _translate(exc: ApiError) -> ProviderError:
    """The exception the HTTP transport raises for the HTTP answer ``exc`` renders as."""
    message = f"Error code: {exc.status} - {exc.message}"
    if exc.status == 401:
        return ProviderAuthError(f"the provider refused the API key: {message}")
    if exc.status == 429 and "insufficient_quota" in (exc.code, exc.type):
        return ProviderQuotaError(f"insufficient_quota: {message}")
    text = f"provider answered HTTP {exc.status}: {message}"
    if exc.status in (408, 409, 429) or exc.status >= 500:
        return TransientProviderError(text)
    return ProviderError(text)


def _to_provider_batch(data: Mapping[str, Any]) -> ProviderBatch:
    """A Batch object (the API's JSON dict) as the port's `ProviderBatch`."""
    listed = data.get("errors")
    entries: list[dict[str, Any]] = (listed or {}).get("data") or []
    return ProviderBatch(
        id=data["id"],
        status=data["status"],
        output_file_id=data.get("output_file_id"),
        error_file_id=data.get("error_file_id"),
        errors=tuple((e.get("code") or "unknown", e.get("message") or "") for e in entries),
        metadata=dict(data.get("metadata") or {}),
        created_at=int(data["created_at"]),
        input_file_id=data.get("input_file_id"),
        request_count=(data.get("request_counts") or {}).get("total"),
    )

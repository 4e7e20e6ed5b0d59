"""The OpenAI Files and Batches API through the official ``openai`` SDK."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from batchor.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    TransientProviderError,
)
from batchor.providers.base import ProviderBatch, SyncResult, copy_body
from batchor.providers.openai.sync import parse_request, rate_limit_wait, result_line, sync_path

if TYPE_CHECKING:
    from openai import OpenAI

T = TypeVar("T")

_DOWNLOAD_CHUNK = 1 << 20
# The header that makes the SDK hand back the raw response (status, headers) of a call.
RAW_RESPONSE = "X-Stainless-Raw-Response"
# Names a synchronous request by its batch line's custom id, as OpenAI's request logs show it.
CLIENT_REQUEST_ID = "X-Client-Request-Id"


class OpenAITransport:
    """The OpenAI Files and Batches API through the ``openai`` SDK (a `BatchTransport`).

    The SDK client is made on first use, so constructing a transport is free. Key and base
    URL are the given ones, else ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` as the SDK reads
    them. SDK errors are re-raised as `TransientProviderError` (worth retrying later),
    `ProviderQuotaError`, `ProviderAuthError` or `ProviderError`; their messages never
    contain the key.

    Args:
        api_key: The key; ``None`` reads ``OPENAI_API_KEY``.
        base_url: The API base URL; ``None`` reads ``OPENAI_BASE_URL``, else the public API.
        max_retries: Retries of idempotent calls on transient errors (never of a create).
        timeout: Seconds per call.
        create_timeout: Seconds a batch create may take before it is given up (and looked up
            by its metadata on the next attempt).
    """

    #: Requests are uploaded as a file first; batches keep their metadata; a batch's
    #: request can be sent synchronously too (`send_sync`).
    inline_requests = False
    tags_batches = True
    sync_requests = True

    #: What a missing key is reported as.
    missing_key = (
        "no OpenAI API key: set the OPENAI_API_KEY environment variable (from Python, "
        "OpenAIProviderConfig(api_key=...) or BatchRunner(api_key=...))"
    )

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 4,
        timeout: float = 600.0,
        create_timeout: float = 60.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        self._create_timeout = create_timeout
        self._client: OpenAI | None = None

    def _new_client(self) -> OpenAI:
        """A new SDK client (Azure's transport makes an ``AzureOpenAI`` one)."""
        import openai

        return openai.OpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=self._max_retries,
            timeout=self._timeout,
        )

    @property
    def client(self) -> OpenAI:
        """The SDK client, made on first use.

        Raises:
            ProviderAuthError: no key is configured.
        """
        if self._client is None:
            import openai

            try:
                self._client = self._new_client()
            except openai.OpenAIError:
                raise ProviderAuthError(self.missing_key) from None
        return self._client

    def check_credentials(self) -> None:
        """Raise `ProviderAuthError` if no key is configured (makes no call)."""
        self.client  # noqa: B018 - making the client is the check

    def send_sync(self, request_line: bytes) -> SyncResult:
        """Send the request a batch input line carries to its endpoint synchronously (at the
        standard price). The SDK retries a 429 or 5xx up to ``max_retries`` times, waiting
        as ``retry-after`` says; the answer, error answers included, comes back as the
        output line a batch would hold for the request, with the wait the rate-limit
        headers ask for before the next request.

        Raises:
            TransientProviderError: no answer (timeout, connection).
            ProviderAuthError: the key was refused.
        """
        import openai

        custom_id, url, body = parse_request(request_line)
        raw: Any  # the SDK's raw response (status, headers, parse()) under RAW_RESPONSE
        try:
            raw = self.client.post(
                sync_path(url),
                cast_to=object,
                body=body,
                options={"headers": {RAW_RESPONSE: "true", CLIENT_REQUEST_ID: custom_id}},
            )
        except openai.AuthenticationError as exc:
            raise ProviderAuthError(f"the provider refused the API key: {exc.message}") from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientProviderError(f"provider unreachable: {exc}") from exc
        except openai.APIStatusError as exc:
            try:
                answer = exc.response.json()
            except ValueError:
                answer = {"error": {"message": exc.message, "type": "server_error"}}
            line = result_line(custom_id, exc.status_code, answer)
            return SyncResult(line, rate_limit_wait(exc.response.headers))
        line = result_line(custom_id, raw.status_code, raw.parse())
        return SyncResult(line, rate_limit_wait(raw.headers))

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        """Upload a batch input file, streamed; retried from the start on transient errors."""

        def call() -> str:
            content.seek(0)
            created = self.client.with_options(max_retries=0).files.create(
                file=(filename, content, "application/jsonl"), purpose="batch"
            )
            return created.id

        return _retrying(call, self._max_retries)

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        """Batch input files named ``filename`` created since ``created_after``, newest first."""
        page = _translated(lambda: self.client.files.list(purpose="batch", order="desc", limit=100))
        found: list[str] = []
        while True:
            for item in page.data:
                if item.created_at < created_after:
                    return found
                if item.filename == filename:
                    found.append(item.id)
            if not page.has_next_page():
                return found
            page = _translated(page.get_next_page)

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        """Create a batch from an uploaded file (``content`` is not needed), with the SDK's
        automatic retries off."""
        client = self.client.with_options(max_retries=0, timeout=self._create_timeout)
        batch = _translated(
            lambda: client.batches.create(
                input_file_id=input_file_id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata=dict(metadata),
            )
        )
        return _to_provider_batch(batch)

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        return _to_provider_batch(_translated(lambda: self.client.batches.retrieve(batch_id)))

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        """Batches newest first, until one created before ``created_after``."""
        page = _translated(lambda: self.client.batches.list(limit=100))
        while True:
            for batch in page.data:
                if batch.created_at < created_after:
                    return
                yield _to_provider_batch(batch)
            if not page.has_next_page():
                return
            page = _translated(page.get_next_page)

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch."""
        return _to_provider_batch(_translated(lambda: self.client.batches.cancel(batch_id)))

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        """Stream a file's content into ``dest`` in 1 MiB chunks.

        A file the provider does not serve yet (404 right after a batch ends) is reported as
        transient, to be downloaded again later.
        """
        import openai

        def call() -> int:
            dest.seek(0)
            dest.truncate()
            with self.client.with_options(max_retries=0).files.with_streaming_response.content(
                file_id
            ) as response:
                return copy_body(response.iter_bytes(_DOWNLOAD_CHUNK), dest, f"file {file_id}")

        try:
            return _retrying(call, self._max_retries)
        except ProviderError as exc:
            if isinstance(exc.__cause__, openai.NotFoundError):
                raise TransientProviderError(f"file {file_id} is not available yet") from exc
            raise

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file; a file already gone is fine."""
        import openai

        try:
            _translated(lambda: self.client.files.delete(file_id))
        except ProviderError as exc:
            if not isinstance(exc.__cause__, openai.NotFoundError):
                raise


def _to_provider_batch(batch: Any) -> ProviderBatch:
    errors: tuple[tuple[str, str], ...] = ()
    if batch.errors is not None and batch.errors.data:
        errors = tuple((e.code or "unknown", e.message or "") for e in batch.errors.data)
    return ProviderBatch(
        id=batch.id,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors=errors,
        metadata=dict(batch.metadata or {}),
        created_at=int(batch.created_at),
        input_file_id=batch.input_file_id,
        request_count=batch.request_counts.total if batch.request_counts is not None else None,
    )


def _translated(call: Callable[[], T]) -> T:
    """Run an SDK call, re-raising its errors as batchor's provider errors."""
    import openai

    try:
        return call()
    except openai.AuthenticationError as exc:
        raise ProviderAuthError(f"the provider refused the API key: {exc.message}") from exc
    except openai.RateLimitError as exc:
        if exc.code == "insufficient_quota" or exc.type == "insufficient_quota":
            raise ProviderQuotaError(f"insufficient_quota: {exc.message}") from exc
        raise TransientProviderError(f"provider answered HTTP 429: {exc.message}") from exc
    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
        raise TransientProviderError(f"provider unreachable: {exc}") from exc
    except openai.APIStatusError as exc:
        text = f"provider answered HTTP {exc.status_code}: {exc.message}"
        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
            raise TransientProviderError(text) from exc
        raise ProviderError(text) from exc


def _retrying(call: Callable[[], T], retries: int, base: float = 0.5, cap: float = 30.0) -> T:
    """Call, retrying transient errors with exponential backoff and full jitter."""
    for attempt in range(retries + 1):
        try:
            return _translated(call)
        except TransientProviderError:
            if attempt == retries:
                raise
            time.sleep(random.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")

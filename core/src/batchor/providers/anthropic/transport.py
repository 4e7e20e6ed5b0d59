"""The Anthropic Message Batches API through the official ``anthropic`` SDK (imported on first
use: the core runs without it)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from batchor.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    TransientProviderError,
)
from batchor.providers.anthropic.sync import NO_CREDIT, send_message
from batchor.providers.base import ProviderBatch, SyncResult, copy_body

if TYPE_CHECKING:
    from anthropic import Anthropic

T = TypeVar("T")

MISSING_SDK = "the anthropic provider needs the anthropic SDK: pip install 'batchor[anthropic]'"
MISSING_KEY = (
    "no Anthropic API key: set the ANTHROPIC_API_KEY environment variable (from Python, "
    "AnthropicProviderConfig(api_key=...) or BatchRunner(credentials={'anthropic': ...}))"
)
_BATCHES = "/v1/messages/batches"
_CHUNK = 1 << 20
_PREFIX = b'{"requests":['
_SUFFIX = b"]}"
_CONNECT_TIMEOUT = 10.0


class _UploadTooSlow(Exception):
    """The create call's body was not sent within its deadline: the call is abandoned
    before the server has the whole body, so no batch is made."""


def _sdk() -> Any:
    """The ``anthropic`` module.

    Raises:
        ConfigurationError: it is not installed (one line naming the extra).
    """
    try:
        import anthropic
    except ImportError:
        raise ConfigurationError(MISSING_SDK) from None
    return anthropic


class AnthropicTransport:
    """The Message Batches API through the ``anthropic`` SDK (a `BatchTransport`).

    A batch's requests travel inline in its create call (no file is uploaded), and a batch
    keeps no metadata: a batch made by a create whose answer was lost is found again by when
    it was made and how many requests it holds (`batchor.engine.lookup`). The results of an
    ended batch are fetched by the batch's id, which is therefore its ``output_file_id``.

    The SDK client is made on first use. Key and base URL are the given ones, else
    ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``. SDK errors are re-raised as
    `TransientProviderError` (worth retrying later), `ProviderQuotaError`,
    `ProviderAuthError` or `ProviderError`; their messages never contain the key.

    Args:
        api_key: The key; ``None`` reads ``ANTHROPIC_API_KEY`` (blank counts as unset).
        base_url: The API base URL (without ``/v1``); ``None`` reads ``ANTHROPIC_BASE_URL``,
            else the public API.
        max_retries: Retries of idempotent calls on transient errors (the SDK's own, with
            its backoff; a results download is retried whole, from the start): never of a
            create.
        timeout: Seconds per call.
        create_timeout: Seconds a create may spend sending its requests, and then again
            waiting for the answer: past either, it is given up (and its batch, if the server
            made one, is found again on the next attempt). A body not wholly sent by then is
            abandoned mid-way, so no batch is made; a create thus lasts at most about twice
            this (55 s: 110 s, inside the engine's 120 s create lease,
            `batchor.engine.submit`). On a slow link,
            pack smaller batches (``BatchLimits.max_bytes``): 256 MB in 60 s needs about
            35 Mbit/s.
    """

    #: Requests go in the create call; batches keep no metadata; a batch's request can be
    #: sent synchronously too (`send_sync`).
    inline_requests = True
    tags_batches = False
    sync_requests = True

    #: What a missing key is reported as.
    missing_key = MISSING_KEY

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 4,
        timeout: float = 600.0,
        create_timeout: float = 55.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        self._create_timeout = create_timeout
        self._client: Anthropic | None = None

    @property
    def client(self) -> Anthropic:
        """The SDK client, made on first use.

        Raises:
            ConfigurationError: the ``anthropic`` SDK is not installed.
            ProviderAuthError: no key is configured.
        """
        if self._client is None:
            anthropic = _sdk()
            key = (
                self._api_key if self._api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
            )
            if key is None or not key.strip():
                raise ProviderAuthError(self.missing_key)
            self._client = anthropic.Anthropic(
                api_key=key,
                base_url=self._base_url,
                max_retries=self._max_retries,
                timeout=self._timeout,
            )
        return self._client

    def send_sync(self, request_line: bytes) -> SyncResult:
        """Send the ``params`` a batch request line carries to ``POST /v1/messages``
        synchronously (at the standard price). The SDK retries a 429, 5xx or 529 up to
        ``max_retries`` times, waiting as ``retry-after`` says; the answer, error answers
        included, comes back as the results line a batch would hold for the request, with
        the wait the ``anthropic-ratelimit-*`` headers ask for before the next request
        (`batchor.providers.anthropic.sync`).

        Raises:
            TransientProviderError: no answer (timeout, connection).
            ProviderAuthError: the key was refused.
            ProviderQuotaError: the account has no credit left.
        """
        return send_message(self.client, request_line)

    def check_credentials(self) -> None:
        """Raise at once (making no call) if the SDK is missing (`ConfigurationError`) or no
        key is configured (`ProviderAuthError`)."""
        self.client  # noqa: B018 - making the client is the check

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        """Not part of this API: requests go inline in the create call."""
        raise ProviderError("the Message Batches API takes no uploads: requests go inline")

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        """Not part of this API: requests go inline in the create call."""
        raise ProviderError("the Message Batches API takes no uploads: requests go inline")

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        """Create a batch holding the requests of the file ``content`` opens, in one call
        with the SDK's automatic retries off. ``metadata`` is not sent (a Message Batch keeps
        none) and ``input_file_id`` is only the engine's marker.

        The body, ``{"requests":[`` + the file's lines joined by commas + ``]}``, is streamed
        from the file in 1 MiB chunks with its length declared up front, so memory stays
        flat whatever the batch's size (no request is parsed).
        """
        if content is None:
            raise ProviderError("an Anthropic batch is created from its request file")
        from anthropic.types.messages import MessageBatch

        client = self.client.with_options(max_retries=0, timeout=self._create_timeout)
        deadline = time.monotonic() + self._create_timeout
        with content() as fh:
            length = _body_length(fh)

            def call() -> Any:
                return client.post(
                    _BATCHES,
                    cast_to=MessageBatch,
                    content=_body(fh, deadline, self._create_timeout),
                    options={
                        "headers": {
                            "Content-Type": "application/json",
                            "Content-Length": str(length),
                        }
                    },
                )

            return _to_provider_batch(_translated(call))

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        return _to_provider_batch(
            _translated(lambda: self.client.messages.batches.retrieve(batch_id))
        )

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        """Batches newest first (pages of 100, by ``after_id``), until one created before
        ``created_after``."""
        page = _translated(lambda: self.client.messages.batches.list(limit=100))
        while True:
            for batch in page.data:
                found = _to_provider_batch(batch)
                if found.created_at < created_after:
                    return
                yield found
            if not page.has_next_page():
                return
            page = _translated(page.get_next_page)

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch (a batch already cancelling stays so)."""
        return _to_provider_batch(
            _translated(lambda: self.client.messages.batches.cancel(batch_id))
        )

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        """Stream the results of the batch ``file_id`` (a batch id) into ``dest`` in 1 MiB
        chunks, as raw JSONL bytes.

        Results not served (yet) are reported as transient, to be fetched again later: a
        batch that has not ended has no results URL, and a 404 may follow its end.
        """
        anthropic = _sdk()

        def call() -> int:
            dest.seek(0)
            dest.truncate()
            batches = self.client.with_options(max_retries=0).messages.batches
            with batches.with_streaming_response.results(file_id) as response:
                return copy_body(response.iter_bytes(_CHUNK), dest, f"the results of {file_id}")

        try:
            return _retrying(call, self._max_retries)
        except ProviderError as exc:
            if isinstance(exc.__cause__, anthropic.NotFoundError):
                raise TransientProviderError(
                    f"the results of batch {file_id} are not available yet"
                ) from exc
            raise

    def delete_file(self, file_id: str) -> None:
        """Nothing to delete: no file was uploaded, and a batch's results stay with it (the
        provider removes them after 29 days)."""


def _body_length(fh: BinaryIO) -> int:
    """The create body's length for the request file ``fh`` (each line ends in a newline).

    Raises:
        ProviderError: the file holds no request.
    """
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        raise ProviderError("the batch's request file is empty")
    fh.seek(size - 1)
    if fh.read(1) != b"\n":
        raise ProviderError("the batch's request file does not end with a newline")
    fh.seek(0)
    # The last newline is dropped and every other one becomes a comma.
    return len(_PREFIX) + size - 1 + len(_SUFFIX)


def _body(fh: BinaryIO, deadline: float, limit: float) -> Iterator[bytes]:
    """The create body, read from ``fh`` a chunk at a time; the upload is abandoned (raising
    `_UploadTooSlow`) past ``deadline``."""
    fh.seek(0, os.SEEK_END)
    remaining = fh.tell() - 1
    fh.seek(0)
    yield _PREFIX
    while remaining > 0:
        if time.monotonic() > deadline:
            raise _UploadTooSlow(f"the batch's requests were not sent within {limit:g} s")
        chunk = fh.read(min(_CHUNK, remaining))
        if not chunk:
            raise ProviderError("the batch's request file shrank while it was being sent")
        remaining -= len(chunk)
        yield chunk.replace(b"\n", b",")
    yield _SUFFIX


def _epoch(value: datetime | None) -> int:
    return int(value.timestamp()) if value is not None else 0


def _status(batch: Any) -> str:
    """A Message Batch's state in the port's vocabulary.

    ``in_progress`` and ``canceling`` map to ``in_progress`` and ``cancelling``. An ``ended``
    batch is ``cancelled`` if its cancellation was asked for; else ``expired`` if any of its
    requests expired (it reached its 24 h end with work left); else ``completed`` (each
    request succeeded or errored).
    """
    status = batch.processing_status
    if status == "canceling":
        return "cancelling"
    if status != "ended":
        return "in_progress"
    if batch.cancel_initiated_at is not None:
        return "cancelled"
    if batch.request_counts.expired:
        return "expired"
    return "completed"


def _to_provider_batch(batch: Any) -> ProviderBatch:
    counts = batch.request_counts
    status = _status(batch)
    return ProviderBatch(
        id=batch.id,
        status=status,
        # The results are fetched by the batch's id, once it has ended.
        output_file_id=batch.id if batch.processing_status == "ended" else None,
        created_at=_epoch(batch.created_at),
        request_count=(
            counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
        ),
    )


def _translated(call: Callable[[], T]) -> T:
    """Run an SDK call, re-raising its errors as batchor's provider errors."""
    anthropic = _sdk()
    try:
        return call()
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
        raise ProviderAuthError(
            f"the provider refused the API key: HTTP {exc.status_code}: {_message(exc)}"
        ) from exc
    except anthropic.APITimeoutError as exc:
        raise TransientProviderError(f"provider did not answer in time: {exc.message}") from exc
    except anthropic.APIConnectionError as exc:
        if isinstance(exc.__cause__, _UploadTooSlow):
            raise TransientProviderError(f"{exc.__cause__}; nothing was created") from exc
        raise TransientProviderError(f"provider unreachable: {exc.message}") from exc
    except anthropic.APIStatusError as exc:
        code = exc.status_code
        text = f"provider answered HTTP {code}: {_message(exc)}"
        if code in (408, 409, 429) or code >= 500:
            raise TransientProviderError(text) from exc
        if code == 402 or exc.type == "billing_error" or NO_CREDIT in _message(exc).lower():
            raise ProviderQuotaError(text) from exc
        raise ProviderError(text) from exc
    except anthropic.AnthropicError as exc:
        # Raised by the SDK itself, e.g. results asked for before the batch has ended.
        raise TransientProviderError(f"provider call failed: {exc}") from exc


def _message(exc: Any) -> str:
    """The API's own error message (``error.message``), else the SDK's."""
    return str(getattr(exc, "api_message", None) or exc.message)


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

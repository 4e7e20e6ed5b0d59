"""The provider port: a provider is a transport (its batch API's calls) plus a codec (its
wire format). The engine calls only these two; no provider's names, codes or JSON keys are
known outside the provider's own package."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple, Protocol

from batchor.errors import TransientProviderError as TransientProviderError  # re-exported
from batchor.items import PromptParts

#: Batch statuses after which nothing changes. Every transport reports its provider's states
#: in this vocabulary (validating, in_progress, finalizing, completed, failed, expired,
#: cancelling, cancelled).
TERMINAL_PROVIDER_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


class SyncResult(NamedTuple):
    """A request sent synchronously (`BatchTransport.send_sync`), answered.

    Attributes:
        line: The answer as a line of the batch's output file would carry it for that
            request (so the codec judges it exactly as a batch line).
        wait: Seconds the provider's rate-limit headers ask to hold off before the next
            request (none left until they reset); ``0.0`` when there is room.
    """

    line: bytes
    wait: float = 0.0


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """A provider batch as the engine needs it.

    Attributes:
        id: The provider's batch id.
        status: Its state in the port's vocabulary (validating, in_progress, finalizing,
            completed, failed, expired, cancelling, cancelled).
        output_file_id: File of answered lines, if any.
        error_file_id: File of failed or unanswered lines, if any.
        errors: Batch-level errors as ``(code, message)`` pairs.
        metadata: The batch's metadata (how a batch created by an interrupted attempt is
            found again).
        created_at: Creation time (epoch seconds).
        input_file_id: The file of requests the batch was created from.
        request_count: How many requests the batch holds, where the provider says (how a
            batch is recognised where it keeps no metadata).
    """

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[tuple[str, str], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    input_file_id: str | None = None
    request_count: int | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the provider is done with the batch."""
        return self.status in TERMINAL_PROVIDER_STATUSES


class BatchTransport(Protocol):
    """A provider's batch API calls. Each call reports a failure as `TransientProviderError`
    (worth retrying later), `ProviderQuotaError`, `ProviderAuthError` or `ProviderError`
    (permanent); messages never contain a key."""

    @property
    def inline_requests(self) -> bool:
        """Whether a batch's requests go in the create call itself (no upload step): the
        engine then skips `upload_file` and passes ``content`` to `create_batch`."""
        ...

    @property
    def tags_batches(self) -> bool:
        """Whether a batch keeps the metadata it was created with. Where it does, a batch
        made by an interrupted create is found again by it; where it does not, by when it
        was made and how many requests it holds (see `batchor.engine.lookup`)."""
        ...

    @property
    def sync_requests(self) -> bool:
        """Whether `send_sync` can send a batch's request through the provider's ordinary
        synchronous API (what `FinishSync` needs)."""
        ...

    def send_sync(self, request_line: bytes) -> SyncResult:
        """Send the request one batch input line carries (as the codec framed it) through
        the provider's synchronous API, at its standard price; rate-limit answers (429) are
        retried a bounded number of times, waiting as the provider's ``retry-after`` says.
        An HTTP error answer comes back as the error line a batch would hold for it.

        Raises:
            TransientProviderError: no answer (timeout, connection); a retry may fix it.
            ProviderAuthError: the key was refused.
            ProviderError: the transport cannot send synchronously.
        """
        ...

    def check_credentials(self) -> None:
        """Raise `ProviderAuthError` at once if no credentials are configured (no call is
        made); used before a run is created."""
        ...

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        """Upload a batch input file; returns its file id."""
        ...

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        """Ids of batch input files uploaded under ``filename`` since ``created_after``,
        newest first (to adopt an upload whose id was never recorded)."""
        ...

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        """Create a batch from an uploaded file (or, for a transport with
        `inline_requests`, from the request file ``content`` opens). Never retried by the
        transport: a retry could buy it twice."""
        ...

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        ...

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        """Batches newest first, stopping at the first created before ``created_after``."""
        ...

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch."""
        ...

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        """Stream a file's content into ``dest``; returns the bytes written. Every attempt
        starts with ``dest.seek(0)`` and ``dest.truncate()``. A file not served yet, or a
        download cut half-way, is a `TransientProviderError`."""
        ...

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (missing files are ignored)."""
        ...


@functools.cache
def connection_errors() -> tuple[type[BaseException], ...]:
    """The HTTP clients' transport errors (a connection lost, refused or timed out, a body
    cut short): those of ``httpx2`` (the fork the openai and google-genai SDKs use where it
    is installed) and ``httpx``. The SDKs wrap them only while a request is sent, not once
    its body streams."""
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            imported = __import__(module)
        except ImportError:
            continue
        found.append(imported.TransportError)
    return tuple(found)


def copy_body(chunks: Iterable[bytes], dest: BinaryIO, what: str) -> int:
    """Write a streamed body's ``chunks`` into ``dest``; returns the bytes written. A
    connection lost half-way (`connection_errors`) is a `TransientProviderError` naming
    ``what`` was being downloaded."""
    written = 0
    stream = iter(chunks)
    while True:
        try:  # only the provider's side is judged: what ``dest`` raises passes as it is
            chunk = next(stream)
        except StopIteration:
            return written
        except connection_errors() as exc:
            raise TransientProviderError(f"the download of {what} broke off: {exc}") from exc
        dest.write(chunk)
        written += len(chunk)


def sends_sync(transport: object) -> bool:
    """Whether a transport can send requests synchronously (one without the attribute, a
    test double of the batch API alone, cannot)."""
    return bool(getattr(transport, "sync_requests", False))


class Reply(NamedTuple):
    """What one result line says about its request (a tuple: read by the million).

    Attributes:
        text: The reply text when the request succeeded (for embeddings, the vector as a
            JSON array).
        usage: Tokens billed, ``(input, output)``.
        error_class: ``None`` on success, else a failure class (see ``ItemFailure``).
        message: The failure's message.
        retryable: Whether that failure is retried.
    """

    text: str | None
    usage: tuple[int, int] | None
    error_class: str | None = None
    message: str = ""
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """What a batch that ended without answering every item means for the items left
    unanswered and for the run.

    Attributes:
        charge: ``(error_class, message)`` to charge each unanswered item an attempt with;
            ``None`` requeues them free (the provider never ran them).
        pause_reason: Set when the account cannot take more work (out of quota): the run
            pauses with this reason.
        capacity: The provider refused the batch for capacity: packing backs off.
    """

    charge: tuple[str, str] | None
    pause_reason: str | None = None
    capacity: bool = False


class RequestCodec(Protocol):
    """A provider's wire format for one job (its model, endpoint, parameters and schema).

    Attributes:
        endpoint: The endpoint the batch is created for, as the transport passes it.
        output_kind: ``"text"`` (a string reply, parsed into the structured-output model if
            the job has one) or ``"vector"`` (an embedding: a JSON array of floats).
    """

    endpoint: str
    output_kind: str

    def encode_body(self, parts: PromptParts) -> bytes:
        """The request body for one prompt, as compact UTF-8 JSON (same prompt, same bytes).

        Raises:
            ConfigurationError: the prompt asks for what the endpoint cannot do.
            TypeError, ValueError: the text cannot be encoded.
        """
        ...

    def frame(self, seq: int, body: bytes) -> bytes:
        """The whole request line (newline included) for the item numbered ``seq``."""
        ...

    def decode(self, line: bytes) -> tuple[int, Reply | None] | None:
        """One result line: the item's seq and its reply, ``(seq, None)`` for a request the
        provider never ran (requeued without charging an attempt), or ``None`` for a line
        that is not a result."""
        ...

    def batch_verdict(self, status: str, errors: list[tuple[str, str]]) -> BatchVerdict:
        """The verdict on a batch that ended ``status`` with these batch-level errors."""
        ...

    def estimate_tokens(self, parts: PromptParts) -> int:
        """Estimated input tokens of one request (for the enqueued-token budget)."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderCredentials:
    """How a runner reaches one provider when a job's config does not say: a key and an API
    base URL. Held in memory only: never stored, and never shown in a ``repr``.

    Attributes:
        api_key: The key; ``None`` leaves it to the config, else the provider's environment
            variable (``OPENAI_API_KEY``, ``AZURE_OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``,
            ``GEMINI_API_KEY``).
        base_url: The API base URL (for Azure, the resource endpoint); it overrides the one
            stored with a run, so a later process can reach the provider another way.
    """

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """A provider's own limits and habits, as packing and the exactly-once lookup use them.

    Attributes:
        max_requests: Requests per batch.
        max_bytes: Bytes per batch input.
        lookback_seconds: How long a batch can live at the provider before it ends by
            itself; ``None`` when batches never expire (the lookup for a batch created by an
            earlier life of a run then reaches back to the run's creation).
    """

    max_requests: int
    max_bytes: int
    lookback_seconds: float | None


class ProviderConfig(Protocol):
    """A provider's settings for a job; its type chooses the provider."""

    @property
    def model(self) -> str:
        """The model (or deployment) every request uses."""
        ...

    @property
    def endpoint(self) -> str:
        """The endpoint every request goes to."""
        ...

    @property
    def enqueued_token_limit(self) -> int | None:
        """The most estimated input tokens in flight at once (``None``: no limit)."""
        ...

    @property
    def quota_scope(self) -> str | None:
        """Separates token budgets of the same model."""
        ...

    @property
    def provider_name(self) -> str:
        """The provider's name as recorded with a run (``openai``, ``azure``)."""
        ...

    @property
    def limits(self) -> ProviderLimits:
        """The provider's limits for this config."""
        ...

    @property
    def request_params(self) -> Mapping[str, Any]:
        """Extra body parameters for every request."""
        ...

    def record(self) -> dict[str, Any]:
        """The settings to store with a run (never a key)."""
        ...

    def codec(self, schema: dict[str, Any] | None, schema_name: str) -> RequestCodec:
        """The codec of a job with this config and structured-output schema.

        Raises:
            ConfigurationError: the endpoint cannot give structured output.
        """
        ...

    def transport(self, *, api_key: str | None, base_url: str | None) -> BatchTransport:
        """The transport, with a key and base URL used where the config sets none."""
        ...

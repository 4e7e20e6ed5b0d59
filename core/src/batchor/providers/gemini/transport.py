"""Gemini Batch Mode and the Files API through the official ``google-genai`` SDK.

Uploads, creates, cancels, deletes and downloads go through the SDK's public calls. A batch's
state is read as the REST API returns it (through the SDK's own HTTP client, so its key,
base URL and timeouts apply): the SDK's ``BatchJob`` leaves out what batchor needs of it, the
input file, the request count (``batchStats``) and a failed batch's ``error``.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import urlencode

from batchor.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    TransientProviderError,
)
from batchor.providers.base import TERMINAL_PROVIDER_STATUSES, ProviderBatch, SyncResult
from batchor.providers.gemini.errors import retrying, status_of, translated
from batchor.providers.gemini.operations import STATES, created_at, to_batch
from batchor.providers.gemini.streams import Counter, Reader
from batchor.providers.gemini.sync import generate_path, parse_request, send_request
from batchor.providers.gemini.tags import KeyDigest, display_name, read_display_name, resolve

if TYPE_CHECKING:
    from types import ModuleType

    from google.genai import Client

T = TypeVar("T")

MISSING_SDK = "the gemini provider needs the google-genai SDK: pip install 'batchor[gemini]'"
MISSING_KEY = (
    "no Gemini API key: set the GEMINI_API_KEY environment variable (or GOOGLE_API_KEY; from "
    "Python, GeminiProviderConfig(api_key=...) or BatchRunner(credentials={'gemini': ...}))"
)
KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
BASE_URL_VARIABLE = "GOOGLE_GEMINI_BASE_URL"

_PAGE_SIZE = 100  # the most the Batches and Files APIs list per page


def load_sdk() -> ModuleType:
    """The ``google.genai`` module.

    Raises:
        ConfigurationError: it is not installed (one line naming the extra).
    """
    try:
        from google import genai
    except ImportError:
        raise ConfigurationError(MISSING_SDK) from None
    return genai


def _setting(given: str | None, variables: tuple[str, ...]) -> str | None:
    """``given``, else the first of the environment variables set; blank counts as unset."""
    if given is not None and given.strip():
        return given
    for name in variables:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class GeminiTransport:
    """Gemini Batch Mode and the Files API through ``google-genai`` (a `BatchTransport`).

    A batch's requests are one JSONL file uploaded through the Files API under the engine's
    filename (its display name); the batch is created from it with a display name carrying
    the run id, the batch key and the input checksum (`batchor.providers.gemini.tags`), which
    is how a batch whose create answer was lost is found again. The model is read from the
    codec's endpoint (``models/{model}:batchGenerateContent``), so one transport serves any
    Gemini job.

    The SDK client is made on first use, so constructing a transport is free; the SDK's own
    retries are off (it retries nothing by default), and idempotent calls are retried here
    on transient errors, never a create. Errors are re-raised as `TransientProviderError`
    (HTTP 408, 429 and 5xx, and connection failures), `ProviderAuthError` (a key the API
    refuses) or `ProviderError`; their messages never contain the key.

    HTTP 429 ``RESOURCE_EXHAUSTED`` is always transient: the Gemini API words its per-minute
    rate limits and its daily quotas alike ("You exceeded your current quota, please check
    your plan and billing details"), so it cannot tell an account out of credit from a busy
    minute; the engine backs off, up to its cap, and tries again.

    A transport made with a ``model`` can also send a batch's request synchronously
    (`send_sync`, what `FinishSync` uses), to ``models/{model}:generateContent``.

    Args:
        api_key: The key; ``None`` reads ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``.
        base_url: The API base URL; ``None`` reads ``GOOGLE_GEMINI_BASE_URL``, else the
            public API.
        max_retries: Retries of idempotent calls on transient errors (never of a create),
            and of a synchronous request answered 408, 429 or 5xx.
        timeout: Seconds per call.
        create_timeout: Seconds a batch create may take before it is given up (and looked up
            by its display name on the next attempt).
        model: The model synchronous requests go to (a batch line names none);
            `GeminiProviderConfig.transport` passes the config's.
    """

    #: Requests are uploaded as a file first; batches keep their display name.
    inline_requests = False
    tags_batches = True
    missing_key = MISSING_KEY

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 4,
        timeout: float = 600.0,
        create_timeout: float = 60.0,
        model: str | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        self._create_timeout = create_timeout
        self._model = model
        self._client: Client | None = None
        self._client_lock = threading.Lock()  # synchronous requests come from many threads
        # Metadata read from an input file's name (files never change), by file name.
        self._resolved: dict[str, dict[str, str]] = {}

    @property
    def client(self) -> Client:
        """The SDK client, made on first use.

        Raises:
            ConfigurationError: the ``google-genai`` SDK is not installed.
            ProviderAuthError: no key is configured.
        """
        with self._client_lock:
            if self._client is None:
                genai = load_sdk()
                key = _setting(self._api_key, KEY_VARIABLES)
                if key is None:
                    raise ProviderAuthError(self.missing_key)
                options = genai.types.HttpOptions(
                    base_url=_setting(self._base_url, (BASE_URL_VARIABLE,)),
                    timeout=int(self._timeout * 1000),
                )
                self._client = genai.Client(vertexai=False, api_key=key, http_options=options)
            return self._client

    @property
    def sync_requests(self) -> bool:
        """Whether `send_sync` can send requests: the transport knows their model."""
        return self._model is not None

    def send_sync(self, request_line: bytes) -> SyncResult:
        """Send the ``GenerateContentRequest`` a batch input line carries to
        ``models/{model}:generateContent`` (at the standard price). An answer of 408, 429 or
        5xx is sent again up to ``max_retries`` times, waiting as its ``RetryInfo`` says
        (else backing off exponentially; at most a minute; a per-day quota is not waited
        for); the answer, error answers included, comes back as the results line a batch
        would hold for the request (`batchor.providers.gemini.sync`), with, for a 429, its
        retry delay as the wait before the next request (the API sends no rate-limit
        headers, so a successful answer asks for none).

        Raises:
            TransientProviderError: no answer (timeout, connection) or one that is not JSON.
            ProviderAuthError: the key was refused.
            ProviderError: the transport was made without a model.
        """
        if self._model is None:
            raise ProviderError("this Gemini transport has no model to send requests to")
        key, request = parse_request(request_line)
        path = generate_path(self._model)
        api = self.client._api_client
        post = lambda: api.request("post", path, dict(request))  # noqa: E731
        return send_request(post, key, self._max_retries)

    def check_credentials(self) -> None:
        """Raise at once (making no call) if the SDK is missing (`ConfigurationError`) or no
        key is configured (`ProviderAuthError`)."""
        self.client  # noqa: B018 - making the client is the check

    # -- files ------------------------------------------------------------------------------

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        """Upload a batch input file (resumable, in 8 MiB chunks) under ``filename`` as its
        display name; retried from the start on transient errors. Returns ``files/...``."""
        reader = content if isinstance(content, io.IOBase) else Reader(content)

        def call() -> str:
            reader.seek(0)
            try:
                uploaded = self.client.files.upload(
                    file=reader, config={"display_name": filename, "mime_type": "jsonl"}
                )
            except (ValueError, KeyError) as exc:  # the upload session was not finalized
                raise TransientProviderError(f"upload interrupted: {exc}") from exc
            if not uploaded.name:
                raise TransientProviderError("the upload answered no file name")
            return uploaded.name

        return retrying(call, self._max_retries)

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        """Input files named ``filename`` uploaded since ``created_after``, newest first (the
        Files API lists newest first; the listing stops at the first older file)."""
        found: list[str] = []
        pager = retrying(
            lambda: self.client.files.list(config={"page_size": _PAGE_SIZE}), self._max_retries
        )
        while True:
            for item in pager.page:
                created = item.create_time.timestamp() if item.create_time else 0.0
                if created < created_after:
                    return found
                state = str(getattr(item.state, "value", item.state) or "ACTIVE")
                if item.display_name == filename and item.name and state == "ACTIVE":
                    found.append(item.name)
            if not pager.config.get("page_token"):
                return found
            retrying(pager.next_page, self._max_retries)

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        """Stream a file's content into ``dest``. A batch's output file the API does not
        serve yet (it answers 403 or 404 for a moment after the batch ends) is reported as
        transient, to be downloaded again later."""
        counter = Counter(dest)

        def call() -> int:
            dest.seek(0)
            dest.truncate()
            counter.written = 0
            # Streamed in chunks (`destination` is in every release the extra allows).
            self.client.files.download(file=file_id, destination=counter)
            return counter.written

        try:
            return retrying(call, self._max_retries)
        except TransientProviderError:
            raise
        except ProviderError as exc:
            if status_of(exc.__cause__) in (403, 404):
                raise TransientProviderError(f"file {file_id} is not available yet") from exc
            raise

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file; a file already gone (403 or 404) is fine."""
        try:
            retrying(lambda: self.client.files.delete(name=file_id), self._max_retries)
        except ProviderError as exc:
            if status_of(exc.__cause__) not in (403, 404):
                raise

    # -- batches ----------------------------------------------------------------------------

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        """Create a batch job from an uploaded file (``content`` is not needed) for the
        model of ``endpoint``, with the metadata in its display name; never retried, and
        given up after ``create_timeout`` seconds."""
        model = endpoint.removesuffix(":batchGenerateContent")
        types = load_sdk().types
        config = types.CreateBatchJobConfig(
            display_name=display_name(metadata),
            http_options=types.HttpOptions(timeout=int(self._create_timeout * 1000)),
        )
        job = translated(
            lambda: self.client.batches.create(model=model, src=input_file_id, config=config)
        )
        state = str(getattr(job.state, "value", job.state) or "")
        return ProviderBatch(
            id=job.name or "",
            status=STATES.get(state, "validating"),
            metadata=dict(metadata),
            created_at=int(job.create_time.timestamp()) if job.create_time else int(time.time()),
            input_file_id=input_file_id,
        )

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        return self._to_batch(self._get_json(batch_id))

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        """Batches newest first (as the API lists them), until one created before
        ``created_after``."""
        token: str | None = None
        while True:
            query: dict[str, Any] = {"pageSize": _PAGE_SIZE}
            if token:
                query["pageToken"] = token
            page = self._get_json("batches?" + urlencode(query))
            for operation in page.get("operations") or []:
                if not isinstance(operation, dict):
                    continue
                if created_at(operation) < created_after:
                    return
                yield self._to_batch(operation)
            token = page.get("nextPageToken")
            if not token:
                return

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch; it is ``cancelling`` until the API reports
        it ended."""
        translated(lambda: self.client.batches.cancel(name=batch_id))
        batch = self.retrieve_batch(batch_id)
        if batch.status in TERMINAL_PROVIDER_STATUSES:
            return batch
        return ProviderBatch(
            id=batch.id,
            status="cancelling",
            output_file_id=batch.output_file_id,
            errors=batch.errors,
            metadata=batch.metadata,
            created_at=batch.created_at,
            input_file_id=batch.input_file_id,
            request_count=batch.request_count,
        )

    def _to_batch(self, operation: dict[str, Any]) -> ProviderBatch:
        """A batch's ``Operation`` JSON as a `ProviderBatch`."""
        return to_batch(operation, self._metadata)

    # -- helpers ----------------------------------------------------------------------------

    def _get_json(self, path: str) -> dict[str, Any]:
        """A GET of the REST API (relative to its version), parsed."""

        def call() -> dict[str, Any]:
            response = self.client._api_client.request("get", path, {})
            try:
                parsed = json.loads(response.body or "{}")
            except ValueError as exc:
                raise TransientProviderError(f"the provider answered {path} with no JSON") from exc
            return parsed if isinstance(parsed, dict) else {}

        return retrying(call, self._max_retries)

    def _metadata(self, name: Any, input_file: Any) -> dict[str, str]:
        """The metadata a batch's display name carries; for a long batch key, read from its
        input file's name (once per file)."""
        tag = read_display_name(name if isinstance(name, str) else None)
        if not isinstance(tag, KeyDigest):
            return tag or {}
        if not isinstance(input_file, str):
            return {}
        if input_file not in self._resolved:
            try:
                stored = retrying(lambda: self.client.files.get(name=input_file), self._max_retries)
            except ProviderError as exc:
                if status_of(exc.__cause__) not in (403, 404):
                    raise
                return {}  # the input file is gone: the batch cannot be recognised
            self._resolved[input_file] = resolve(tag, stored.display_name) or {}
        return self._resolved[input_file]

"""Settings for the OpenAI Batch API provider (no SDK import here, so it stays cheap)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from batchor.errors import ConfigurationError

Endpoint = Literal["/v1/responses", "/v1/chat/completions"]
ENDPOINTS: tuple[str, ...] = ("/v1/responses", "/v1/chat/completions")

# Body keys batchor writes itself; request_params may not override them.
_RESERVED_PARAMS = frozenset(
    {"model", "input", "instructions", "messages", "text", "response_format", "stream"}
)


@dataclass(frozen=True, slots=True)
class OpenAIProviderConfig:
    """Which model and endpoint to call, and how to reach the API.

    The key and base URL follow the ``openai`` SDK's conventions: when ``api_key`` or
    ``base_url`` is ``None`` the SDK reads ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``, so any
    OpenAI-compatible Batch API server works by setting ``OPENAI_BASE_URL``. The key is never
    written to the store, artifacts or logs.

    Attributes:
        model: The model every request of the job uses.
        endpoint: ``/v1/responses`` (default) or ``/v1/chat/completions``.
        api_key: An explicit key; ``None`` reads ``OPENAI_API_KEY``.
        base_url: An explicit API base URL (ending in ``/v1``); ``None`` reads
            ``OPENAI_BASE_URL``, else the public API.
        request_params: Extra body parameters for every request (``temperature``,
            ``max_output_tokens``, ``reasoning``, ...).
        enqueued_token_limit: The most estimated input tokens in flight at the provider at
            once, across every run in the same store that uses this model (and
            ``quota_scope``). Batches wait for room; ``None``: no limit.
        quota_scope: Separates budgets of the same model, e.g. per organisation or project.
    """

    model: str
    endpoint: Endpoint = "/v1/responses"
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    request_params: Mapping[str, Any] = field(default_factory=dict)
    enqueued_token_limit: int | None = None
    quota_scope: str | None = None

    def __post_init__(self) -> None:
        if self.enqueued_token_limit is not None and self.enqueued_token_limit < 1:
            raise ConfigurationError(
                "OpenAIProviderConfig.enqueued_token_limit must be a positive number of "
                f"tokens, got {self.enqueued_token_limit}"
            )
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigurationError("OpenAIProviderConfig.model must be a non-empty string")
        if self.endpoint not in ENDPOINTS:
            raise ConfigurationError(
                f"OpenAIProviderConfig.endpoint must be one of {', '.join(ENDPOINTS)}, "
                f"got {self.endpoint!r}"
            )
        clash = sorted(_RESERVED_PARAMS & set(self.request_params))
        if clash:
            raise ConfigurationError(
                f"OpenAIProviderConfig.request_params may not set {', '.join(clash)}: "
                "batchor builds those from the prompt and the schema"
            )

    def public_base_url(self) -> str | None:
        """``base_url`` without any credentials in it, safe to persist."""
        if self.base_url is None:
            return None
        parts = urlsplit(self.base_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

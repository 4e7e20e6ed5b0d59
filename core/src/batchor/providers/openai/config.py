"""Settings for the OpenAI Batch API provider (no SDK import here, so it stays cheap)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from batchor.errors import ConfigurationError
from batchor.providers.base import ProviderLimits
from batchor.providers.openai.endpoints import ENDPOINTS, Endpoint, endpoint_kind

if TYPE_CHECKING:
    from batchor.providers.openai.codec import OpenAICodec
    from batchor.providers.openai.transport import OpenAITransport

#: The OpenAI Batch API's limits per batch: 50,000 requests (for ``/v1/embeddings``, 50,000
#: embedding inputs, which is the same as batchor sends one input per request) and 200 MB.
OPENAI_LIMITS = ProviderLimits(
    max_requests=50_000,
    max_bytes=200_000_000,
    # The 24 h completion window and a margin for validating and finalizing.
    lookback_seconds=26 * 3600.0,
)

# Body keys batchor writes itself; request_params may not override them.
_RESERVED_PARAMS = frozenset(
    {"model", "input", "instructions", "messages", "text", "response_format", "stream"}
)
# Parameters the embeddings endpoint takes besides model and input.
_EMBEDDING_PARAMS = frozenset({"dimensions", "encoding_format", "user"})


def check_request_params(owner: str, endpoint: str, params: Mapping[str, Any]) -> None:
    """Refuse request parameters batchor writes itself or the endpoint does not take.

    Raises:
        ConfigurationError: names the parameter and the setting.
    """
    clash = sorted(_RESERVED_PARAMS & set(params))
    if clash:
        raise ConfigurationError(
            f"{owner}.request_params may not set {', '.join(clash)}: "
            "batchor builds those from the prompt and the schema"
        )
    if endpoint_kind(endpoint) != "embeddings":
        return
    unknown = sorted(set(params) - _EMBEDDING_PARAMS)
    if unknown:
        raise ConfigurationError(
            f"{owner}.request_params has {', '.join(unknown)}, which the embeddings "
            f"endpoint does not take (it takes {', '.join(sorted(_EMBEDDING_PARAMS))})"
        )
    if params.get("encoding_format", "float") != "float":
        raise ConfigurationError(
            f"{owner}.request_params encoding_format must be 'float' (results are vectors "
            f"of floats), got {params['encoding_format']!r}"
        )


def check_token_limit(owner: str, limit: int | None) -> None:
    """Refuse an enqueued-token limit that is not a positive number."""
    if limit is not None and limit < 1:
        raise ConfigurationError(
            f"{owner}.enqueued_token_limit must be a positive number of tokens, got {limit}"
        )


def public_url(url: str | None) -> str | None:
    """``url`` without any credentials or query in it, safe to persist."""
    if url is None:
        return None
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class OpenAIProviderConfig:
    """Which model and endpoint to call, and how to reach the API.

    The key and base URL follow the ``openai`` SDK's conventions: when ``api_key`` or
    ``base_url`` is ``None`` the SDK reads ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``, so any
    OpenAI-compatible Batch API server works by setting ``OPENAI_BASE_URL``. The key is never
    written to the store, artifacts or logs.

    Attributes:
        model: The model every request of the job uses.
        endpoint: ``/v1/responses`` (default), ``/v1/chat/completions`` or
            ``/v1/embeddings`` (each result's output is then the vector, ``list[float]``).
        api_key: An explicit key; ``None`` reads ``OPENAI_API_KEY``.
        base_url: An explicit API base URL (ending in ``/v1``); ``None`` reads
            ``OPENAI_BASE_URL``, else the public API.
        request_params: Extra body parameters for every request (``temperature``,
            ``max_output_tokens``, ``reasoning``, ...; for embeddings ``dimensions``).
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
        check_token_limit("OpenAIProviderConfig", self.enqueued_token_limit)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigurationError("OpenAIProviderConfig.model must be a non-empty string")
        if self.endpoint not in ENDPOINTS:
            raise ConfigurationError(
                f"OpenAIProviderConfig.endpoint must be one of {', '.join(ENDPOINTS)}, "
                f"got {self.endpoint!r}"
            )
        check_request_params("OpenAIProviderConfig", self.endpoint, self.request_params)

    @property
    def provider_name(self) -> str:
        """``openai``."""
        return "openai"

    @property
    def limits(self) -> ProviderLimits:
        """The OpenAI Batch API's limits."""
        return OPENAI_LIMITS

    def public_base_url(self) -> str | None:
        """``base_url`` without any credentials in it, safe to persist."""
        return public_url(self.base_url)

    def record(self) -> dict[str, Any]:
        """The settings stored with a run (never the key)."""
        return {
            "provider": "openai",
            "model": self.model,
            "endpoint": self.endpoint,
            "base_url": self.public_base_url(),
            "request_params": dict(self.request_params),
            "enqueued_token_limit": self.enqueued_token_limit,
            "quota_scope": self.quota_scope,
        }

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, base_url: str | None = None
    ) -> OpenAIProviderConfig:
        """The config a run was stored with (``base_url`` overrides the stored one)."""
        return cls(
            model=record["model"],
            endpoint=record["endpoint"],
            base_url=base_url or record.get("base_url"),
            request_params=record.get("request_params") or {},
            enqueued_token_limit=record.get("enqueued_token_limit"),
            quota_scope=record.get("quota_scope"),
        )

    def codec(self, schema: dict[str, Any] | None, schema_name: str = "output") -> OpenAICodec:
        """The codec for this config and structured-output schema.

        Raises:
            ConfigurationError: a schema on the embeddings endpoint.
        """
        from batchor.providers.openai.codec import OpenAICodec

        return OpenAICodec(
            model=self.model,
            endpoint=self.endpoint,
            params=self.request_params,
            schema=schema,
            schema_name=schema_name,
        )

    def transport(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> OpenAITransport:
        """The transport over the ``openai`` SDK (the SDK is imported on first call)."""
        from batchor.providers.openai.transport import OpenAITransport

        return OpenAITransport(api_key=self.api_key or api_key, base_url=self.base_url or base_url)

"""Settings for the Azure OpenAI global batch provider (no SDK import here, so it stays
cheap)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from batchor.errors import ConfigurationError
from batchor.providers.base import ProviderLimits
from batchor.providers.openai.config import check_request_params, check_token_limit, public_url

if TYPE_CHECKING:
    from batchor.providers.azure.transport import AzureOpenAITransport
    from batchor.providers.openai.codec import OpenAICodec

#: The endpoints an Azure global batch takes through the api-version API: Chat Completions
#: (Azure's own spelling, without ``/v1``) and Responses.
AzureEndpoint = Literal["/chat/completions", "/v1/responses"]
AZURE_ENDPOINTS: tuple[str, ...] = ("/chat/completions", "/v1/responses")
_EMBEDDINGS = frozenset({"/embeddings", "/v1/embeddings"})

#: Azure OpenAI's global batch limits per input file: 100,000 requests and 200 MB. Azure never
#: expires a batch by itself (a batch past its 24 h target runs on until it ends or is
#: cancelled), so a batch of any age may still be live.
AZURE_LIMITS = ProviderLimits(max_requests=100_000, max_bytes=200_000_000, lookback_seconds=None)


@dataclass(frozen=True, slots=True)
class AzureOpenAIProviderConfig:
    """Which Global-Batch (or Data Zone Batch) deployment and endpoint to call, and how to
    reach the Azure OpenAI resource.

    Endpoint, API version and key follow the ``openai`` SDK's ``AzureOpenAI`` conventions:
    each one left ``None`` is read from ``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION`` and
    ``AZURE_OPENAI_API_KEY`` when the run starts (so a config can be built before the
    environment is set). A missing one is reported before the run is created. The key is
    never written to the store, artifacts or logs.

    Attributes:
        deployment: The batch deployment's name; every request names it as its ``model``
            (Azure requires the same deployment on every line of a batch).
        endpoint: ``/chat/completions`` (default) or ``/v1/responses``. Azure batch does
            not serve embeddings.
        azure_endpoint: The resource endpoint, e.g. ``https://NAME.openai.azure.com``;
            ``None``: the runner's base URL for ``azure``, else ``AZURE_OPENAI_ENDPOINT``.
        api_version: The data-plane API version, e.g. ``2024-10-21``; ``None`` reads
            ``OPENAI_API_VERSION``.
        api_key: An explicit key; ``None``: the runner's for ``azure``
            (``BatchRunner(credentials=...)``), else ``AZURE_OPENAI_API_KEY``.
        price_model: The model the deployment serves (e.g. ``gpt-4o-mini``), for the costs
            in summaries and for the enqueued-token budget's key; ``None``: the deployment
            name. The config's `model` is this, else the deployment.
        request_params: Extra body parameters for every request (``temperature``,
            ``max_tokens``, ``max_output_tokens``, ...).
        enqueued_token_limit: The most estimated input tokens in flight at once, across every
            run in the same store that uses this model (and ``quota_scope``): the
            deployment's enqueued-token quota. Batches wait for room; ``None``: no limit.
        quota_scope: Separates budgets of the same model, e.g. per Azure resource.
    """

    deployment: str
    endpoint: AzureEndpoint = "/chat/completions"
    azure_endpoint: str | None = None
    api_version: str | None = None
    api_key: str | None = field(default=None, repr=False)
    price_model: str | None = None
    request_params: Mapping[str, Any] = field(default_factory=dict)
    enqueued_token_limit: int | None = None
    quota_scope: str | None = None

    def __post_init__(self) -> None:
        owner = "AzureOpenAIProviderConfig"
        check_token_limit(owner, self.enqueued_token_limit)
        if not isinstance(self.deployment, str) or not self.deployment.strip():
            raise ConfigurationError(
                f"{owner}.deployment must be a non-empty string (the batch deployment's name)"
            )
        if self.price_model is not None and not (
            isinstance(self.price_model, str) and self.price_model.strip()
        ):
            raise ConfigurationError(f"{owner}.price_model must be a non-empty string or None")
        if self.endpoint in _EMBEDDINGS:
            raise ConfigurationError(
                f"{owner}.endpoint {self.endpoint!r}: Azure OpenAI batch does not support "
                "embeddings; use OpenAIProviderConfig(endpoint='/v1/embeddings') with the "
                "openai provider"
            )
        if self.endpoint not in AZURE_ENDPOINTS:
            raise ConfigurationError(
                f"{owner}.endpoint must be one of {', '.join(AZURE_ENDPOINTS)}, "
                f"got {self.endpoint!r}"
            )
        check_request_params(owner, self.endpoint, self.request_params)

    @property
    def model(self) -> str:
        """The model the run is priced and budgeted by: ``price_model``, else the
        deployment name."""
        return self.price_model or self.deployment

    @property
    def provider_name(self) -> str:
        """``azure``."""
        return "azure"

    @property
    def limits(self) -> ProviderLimits:
        """Azure OpenAI global batch's limits (batches never expire by themselves)."""
        return AZURE_LIMITS

    def record(self) -> dict[str, Any]:
        """The settings stored with a run (never the key). The resource endpoint and the API
        version are stored as resolved (argument, else environment), so a later process
        reaches the same resource with only the key; ``model`` is the deployment (what
        requests name, and what the token budget is kept by), ``price_model`` apart."""
        return {
            "provider": "azure",
            "model": self.deployment,
            "price_model": self.price_model,
            "deployment": self.deployment,
            "endpoint": self.endpoint,
            "base_url": public_url(self.azure_endpoint or _env("AZURE_OPENAI_ENDPOINT")),
            "api_version": self.api_version or _env("OPENAI_API_VERSION"),
            "request_params": dict(self.request_params),
            "enqueued_token_limit": self.enqueued_token_limit,
            "quota_scope": self.quota_scope,
        }

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, base_url: str | None = None
    ) -> AzureOpenAIProviderConfig:
        """The config a run was stored with. ``base_url`` (the runner's for ``azure``)
        overrides the stored resource endpoint; ``OPENAI_API_VERSION``, when set, overrides
        the stored API version (to move past a retired one)."""
        return cls(
            deployment=record["deployment"],
            endpoint=record["endpoint"],
            azure_endpoint=base_url or record.get("base_url"),
            api_version=_env("OPENAI_API_VERSION") or record.get("api_version"),
            price_model=record.get("price_model"),
            request_params=record.get("request_params") or {},
            enqueued_token_limit=record.get("enqueued_token_limit"),
            quota_scope=record.get("quota_scope"),
        )

    def codec(self, schema: dict[str, Any] | None, schema_name: str = "output") -> OpenAICodec:
        """The codec: OpenAI's wire format, with the deployment as every request's model."""
        from batchor.providers.openai.codec import OpenAICodec

        return OpenAICodec(
            model=self.deployment,
            endpoint=self.endpoint,
            params=self.request_params,
            schema=schema,
            schema_name=schema_name,
        )

    def transport(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> AzureOpenAITransport:
        """The transport over the SDK's ``AzureOpenAI`` client, with the config's settings,
        else the given ones (the runner's for ``azure``), else ``AZURE_OPENAI_ENDPOINT``,
        ``AZURE_OPENAI_API_KEY`` and ``OPENAI_API_VERSION``."""
        from batchor.providers.azure.transport import AzureOpenAITransport

        return AzureOpenAITransport(
            azure_endpoint=self.azure_endpoint or base_url,
            api_key=self.api_key or api_key,
            api_version=self.api_version,
        )


def _env(name: str) -> str | None:
    """A non-blank environment variable's value."""
    value = os.environ.get(name, "").strip()
    return value or None

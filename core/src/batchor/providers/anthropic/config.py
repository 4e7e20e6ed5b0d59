"""Settings for the Anthropic Message Batches provider (no SDK import here: the core imports
and builds jobs without the ``anthropic`` SDK installed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchor.errors import ConfigurationError
from batchor.providers.anthropic.codec import ANTHROPIC_ENDPOINT, AnthropicCodec
from batchor.providers.base import ProviderLimits
from batchor.providers.openai.config import check_token_limit, public_url

if TYPE_CHECKING:
    from batchor.providers.anthropic.transport import AnthropicTransport


#: The create call's body wraps the request file's lines: ``{"requests":[`` + the lines
#: joined by commas + ``]}``, that is the file's size plus this many bytes.
ENVELOPE_BYTES = len(b'{"requests":[') + len(b"]}") - 1

#: The Message Batches API's limits per batch (Batch processing guide, "Batch limitations"):
#: 100,000 requests or 256 MB, whichever comes first, counted on the create call's body (the
#: requests travel inline), so the packed file keeps room for the envelope.
ANTHROPIC_LIMITS = ProviderLimits(
    max_requests=100_000,
    max_bytes=256_000_000 - ENVELOPE_BYTES,
    # A batch ends within 24 hours of its creation (expired, if it has not finished by then);
    # a margin, as for OpenAI's 24 h window.
    lookback_seconds=26 * 3600.0,
)

# Body keys batchor writes itself; request_params may not set them.
_RESERVED_PARAMS = frozenset(
    {"model", "max_tokens", "messages", "system", "tools", "tool_choice", "stream", "output_format"}
)


def check_anthropic_params(owner: str, params: Mapping[str, Any]) -> None:
    """Refuse request parameters batchor writes itself.

    ``output_config`` may carry other settings (``effort``), but not ``format``: structured
    output is batchor's to write, from the job's model. ``cache_control`` must be an object
    (it is moved onto the shared prefix: see `batchor.providers.anthropic.codec`).

    Raises:
        ConfigurationError: names the parameter and the setting.
    """
    clash = sorted(_RESERVED_PARAMS & set(params))
    output_config = params.get("output_config")
    if isinstance(output_config, Mapping) and "format" in output_config:
        clash.append("output_config.format")
    if clash:
        raise ConfigurationError(
            f"{owner}.request_params may not set {', '.join(clash)}: batchor builds those from "
            "the prompt, the config and the structured-output model"
        )
    if "output_config" in params and not isinstance(output_config, Mapping):
        raise ConfigurationError(f"{owner}.request_params output_config must be an object")
    cache = params.get("cache_control")
    if "cache_control" in params and not (isinstance(cache, Mapping) and "type" in cache):
        raise ConfigurationError(
            f"{owner}.request_params cache_control must be an object such as "
            f"{{'type': 'ephemeral'}}, got {cache!r}"
        )


@dataclass(frozen=True, slots=True)
class AnthropicProviderConfig:
    """Which Claude model to call, and how to reach the Anthropic API.

    The key and base URL follow the ``anthropic`` SDK's conventions: when ``api_key`` or
    ``base_url`` is ``None``, ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL`` are read when the
    run starts (so a config can be built before the environment is set). The key is never
    written to the store, artifacts or logs. The SDK is an optional extra
    (``pip install 'batchor[anthropic]'``); without it, a job can still be built and
    estimated, and starting a run says what to install.

    Every request is one Messages API call: the item's prompt as the user message, its
    system prompt as ``system``, and ``max_tokens``. With a structured-output model the
    reply is a forced tool call whose input is the model's JSON (see
    `batchor.providers.anthropic.codec`).

    Attributes:
        model: The Claude model every request uses, e.g. ``claude-sonnet-4-5``.
        max_tokens: The most output tokens of each reply (the Messages API requires it). A
            reply cut off there fails the item (``incomplete``), as OpenAI's does.
        api_key: An explicit key; ``None``: the runner's for ``anthropic``
            (``BatchRunner(credentials=...)``), else ``ANTHROPIC_API_KEY``.
        base_url: An explicit API base URL (without ``/v1``); ``None``: the runner's for
            ``anthropic``, else ``ANTHROPIC_BASE_URL``, else the public API.
        request_params: Extra Messages API parameters for every request (``temperature``,
            ``top_p``, ``top_k``, ``stop_sequences``, ``metadata``, ``thinking``,
            ``output_config={"effort": ...}``, ...). ``cache_control`` (e.g.
            ``{"type": "ephemeral"}``) turns prompt caching on for the prefix every request
            shares: the system prompt (and the structured-output tool before it).
        enqueued_token_limit: The most estimated input tokens in flight at the provider at
            once, across every run in the same store that uses this model (and
            ``quota_scope``). Batches wait for room; ``None``: no limit.
        quota_scope: Separates budgets of the same model, e.g. per workspace.
    """

    model: str
    max_tokens: int
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    request_params: Mapping[str, Any] = field(default_factory=dict)
    enqueued_token_limit: int | None = None
    quota_scope: str | None = None

    def __post_init__(self) -> None:
        owner = "AnthropicProviderConfig"
        check_token_limit(owner, self.enqueued_token_limit)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigurationError(f"{owner}.model must be a non-empty string")
        if (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens < 1
        ):
            raise ConfigurationError(
                f"{owner}.max_tokens must be a positive whole number of tokens, "
                f"got {self.max_tokens!r}"
            )
        check_anthropic_params(owner, self.request_params)

    @property
    def endpoint(self) -> str:
        """``/v1/messages``: a Message Batch holds Messages API requests only (no
        embeddings)."""
        return ANTHROPIC_ENDPOINT

    @property
    def provider_name(self) -> str:
        """``anthropic``."""
        return "anthropic"

    @property
    def limits(self) -> ProviderLimits:
        """The Message Batches API's limits."""
        return ANTHROPIC_LIMITS

    def record(self) -> dict[str, Any]:
        """The settings stored with a run (never the key; the base URL without any
        credentials in it)."""
        return {
            "provider": "anthropic",
            "model": self.model,
            "max_tokens": self.max_tokens,
            "endpoint": ANTHROPIC_ENDPOINT,
            "base_url": public_url(self.base_url),
            "request_params": dict(self.request_params),
            "enqueued_token_limit": self.enqueued_token_limit,
            "quota_scope": self.quota_scope,
        }

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, base_url: str | None = None
    ) -> AnthropicProviderConfig:
        """The config a run was stored with (``base_url``, the runner's for ``anthropic``,
        overrides the stored one)."""
        return cls(
            model=record["model"],
            max_tokens=record["max_tokens"],
            base_url=base_url or record.get("base_url"),
            request_params=record.get("request_params") or {},
            enqueued_token_limit=record.get("enqueued_token_limit"),
            quota_scope=record.get("quota_scope"),
        )

    def codec(self, schema: dict[str, Any] | None, schema_name: str = "output") -> AnthropicCodec:
        """The codec for this config and structured-output schema.

        Raises:
            ConfigurationError: a schema with extended thinking on (a forced tool cannot be
                combined with it).
        """

        return AnthropicCodec(
            model=self.model,
            max_tokens=self.max_tokens,
            params=self.request_params,
            schema=schema,
            schema_name=schema_name,
        )

    def transport(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> AnthropicTransport:
        """The transport over the ``anthropic`` SDK (imported on first use), with the
        config's key and base URL, else the given ones (the runner's for ``anthropic``),
        else ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``."""
        from batchor.providers.anthropic.transport import AnthropicTransport

        return AnthropicTransport(
            api_key=self.api_key or api_key, base_url=self.base_url or base_url
        )

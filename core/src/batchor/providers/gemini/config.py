"""Settings for the Gemini API's Batch Mode provider (no SDK import here: the core imports and
builds jobs without the ``google-genai`` SDK installed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchor.errors import ConfigurationError
from batchor.providers.base import ProviderLimits
from batchor.providers.openai.config import check_token_limit, public_url

if TYPE_CHECKING:
    from batchor.providers.gemini.codec import GeminiCodec
    from batchor.providers.gemini.transport import GeminiTransport

#: The method every batch is created with, as the config reports its endpoint (the codec's
#: endpoint names the model too: ``models/{model}:batchGenerateContent``).
GEMINI_ENDPOINT = "batchGenerateContent"

#: Gemini Batch Mode's limits (Batch API guide): an input file of at most 2 GB; a job pending
#: or running for more than 48 hours expires. No request count is documented: batchor packs
#: at most 100,000 requests per batch (as for Anthropic and Azure), which
#: ``BatchLimits.max_requests`` lowers.
GEMINI_LIMITS = ProviderLimits(
    max_requests=100_000,
    max_bytes=2_000_000_000,
    # The 48 h expiry and a margin, as the OpenAI window's.
    lookback_seconds=50 * 3600.0,
)

# Fields batchor writes itself (in either proto JSON spelling): request_params may not set
# them. ``contents`` and ``system_instruction`` are the request's own fields, refused so that
# a request-level setting is not mistaken for a generation_config one.
_RESERVED_PARAMS = frozenset(
    {
        "contents",
        "system_instruction",
        "systemInstruction",
        "generation_config",
        "generationConfig",
        "response_mime_type",
        "responseMimeType",
        "response_schema",
        "responseSchema",
        "response_json_schema",
        "responseJsonSchema",
        "_response_json_schema",
        "_responseJsonSchema",
    }
)


def check_gemini_params(owner: str, params: Mapping[str, Any]) -> None:
    """Refuse request parameters batchor writes itself.

    Raises:
        ConfigurationError: names the parameter and the setting.
    """
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigurationError(
            f"{owner}.request_params must be a mapping of generation_config field names"
        )
    clash = sorted(_RESERVED_PARAMS & set(params))
    if clash:
        raise ConfigurationError(
            f"{owner}.request_params may not set {', '.join(clash)}: request_params are "
            "generation_config fields (temperature, max_output_tokens, ...), and batchor "
            "writes the contents, the system instruction and the response schema itself"
        )


@dataclass(frozen=True, slots=True)
class GeminiProviderConfig:
    """Which Gemini model to call, and how to reach the Gemini API.

    Each item is one ``GenerateContentRequest`` line of a JSONL file uploaded through the
    Files API; each batch is one batch job created from that file (see
    `batchor.providers.gemini.transport`). The ``google-genai`` SDK is an optional extra
    (``pip install 'batchor[gemini]'``): without it a job can still be built and estimated,
    and starting a run says what to install.

    The key is the given one, else ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY`` (read when the
    run starts, so a config can be built before the environment is set; unlike the SDK,
    which prefers ``GOOGLE_API_KEY`` when both are set, the Gemini-specific variable wins).
    It is never written to the store, artifacts or logs. A runner's credentials for
    ``gemini`` (``BatchRunner(credentials=...)``) apply where the config sets none.

    Attributes:
        model: The model every request uses, e.g. ``gemini-2.5-flash`` (``models/...``
            works too).
        api_key: An explicit key; ``None``: the runner's for ``gemini``, else
            ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``.
        base_url: An explicit API base URL (without the version); ``None``: the runner's
            for ``gemini``, else ``GOOGLE_GEMINI_BASE_URL``, else the public API.
        request_params: ``generation_config`` fields for every request (``temperature``,
            ``max_output_tokens``, ``top_p``, ``top_k``, ``stop_sequences``, ``seed``,
            ``thinking_config``, ...), in either proto JSON spelling. The response MIME type
            and schema are batchor's to write, from the job's structured-output model.
        enqueued_token_limit: The most estimated input tokens in flight at the provider at
            once, across every run in the same store that uses this model (and
            ``quota_scope``): Batch Mode's enqueued-token limit of your tier. Batches wait
            for room; ``None``: no limit.
        quota_scope: Separates budgets of the same model, e.g. per Google Cloud project.
    """

    model: str
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    request_params: Mapping[str, Any] = field(default_factory=dict)
    enqueued_token_limit: int | None = None
    quota_scope: str | None = None

    def __post_init__(self) -> None:
        owner = "GeminiProviderConfig"
        check_token_limit(owner, self.enqueued_token_limit)
        if not isinstance(self.model, str) or not self.model.removeprefix("models/").strip():
            raise ConfigurationError(
                f"{owner}.model must be a non-empty model name such as 'gemini-2.5-flash'"
            )
        check_gemini_params(owner, self.request_params)

    @property
    def endpoint(self) -> str:
        """``batchGenerateContent``: a batch holds ``generateContent`` requests only (no
        embeddings)."""
        return GEMINI_ENDPOINT

    @property
    def provider_name(self) -> str:
        """``gemini``."""
        return "gemini"

    @property
    def limits(self) -> ProviderLimits:
        """Gemini Batch Mode's limits."""
        return GEMINI_LIMITS

    def record(self) -> dict[str, Any]:
        """The settings stored with a run (never the key; the base URL without any
        credentials in it)."""
        return {
            "provider": "gemini",
            "model": self.model,
            "endpoint": GEMINI_ENDPOINT,
            "base_url": public_url(self.base_url),
            "request_params": dict(self.request_params),
            "enqueued_token_limit": self.enqueued_token_limit,
            "quota_scope": self.quota_scope,
        }

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, base_url: str | None = None
    ) -> GeminiProviderConfig:
        """The config a run was stored with (``base_url``, the runner's for ``gemini``,
        overrides the stored one)."""
        return cls(
            model=record["model"],
            base_url=base_url or record.get("base_url"),
            request_params=record.get("request_params") or {},
            enqueued_token_limit=record.get("enqueued_token_limit"),
            quota_scope=record.get("quota_scope"),
        )

    def codec(self, schema: dict[str, Any] | None, schema_name: str = "output") -> GeminiCodec:
        """The codec for this config and structured-output schema (Gemini's JSON Schema
        output names no schema, so ``schema_name`` is not used)."""
        from batchor.providers.gemini.codec import GeminiCodec

        return GeminiCodec(model=self.model, params=self.request_params, schema=schema)

    def transport(
        self, *, api_key: str | None = None, base_url: str | None = None
    ) -> GeminiTransport:
        """The transport over the ``google-genai`` SDK (imported on first use), with the
        config's key and base URL, else the given ones (the runner's for ``gemini``), else
        the environment's, and the config's model (for synchronous requests)."""
        from batchor.providers.gemini.transport import GeminiTransport

        return GeminiTransport(
            api_key=self.api_key or api_key,
            base_url=self.base_url or base_url,
            model=self.model,
        )

"""Size and count limits the Anthropic emulator enforces, defaulting to the real service's."""

from __future__ import annotations

from dataclasses import dataclass

from batchor.errors import ConfigurationError

MB = 1000 * 1000


@dataclass(frozen=True)
class AnthropicEmulatorLimits:
    """Limits of the emulated Message Batches API; shrink them in tests to reach the limit
    errors cheaply.

    The defaults are the documented ones (Batch processing guide, "Batch limitations"; Errors,
    "Request size limits"): at most 100,000 requests and 256 MB per batch, pages of 1 to
    1,000 batches; 32 MB per ``POST /v1/messages`` body. The byte limits are counted in
    decimal megabytes, the stricter reading. The per-minute rate limits of the synchronous
    endpoint default to generous values (an account's own depend on its tier).
    """

    max_batch_requests: int = 100_000
    """Most requests ``POST /v1/messages/batches`` accepts (more: 400
    ``invalid_request_error``)."""
    max_batch_bytes: int = 256 * MB
    """Largest ``POST /v1/messages/batches`` body (larger: 413 ``request_too_large``)."""
    max_list_limit: int = 1000
    """Largest ``limit`` of ``GET /v1/messages/batches``."""
    min_cacheable_tokens: int = 1024
    """Shortest prompt prefix (estimated tokens) a ``cache_control`` breakpoint caches; a
    shorter one is processed without caching, as the real API does."""
    max_message_bytes: int = 32 * MB
    """Largest ``POST /v1/messages`` body (larger: 413 ``request_too_large``)."""
    requests_per_minute: int = 10_000
    """Requests per model per `rate_window` ``POST /v1/messages`` accepts before answering
    429 ``rate_limit_error`` (RPM)."""
    input_tokens_per_minute: int = 10_000_000
    """Estimated input tokens (a token per four characters of the prompt) per model per
    `rate_window` (ITPM), counted when a request arrives."""
    output_tokens_per_minute: int = 2_000_000
    """Output tokens per model per `rate_window` (OTPM), counted once a request is answered:
    a request arriving while none are left is answered 429."""
    rate_window: float = 60.0
    """Seconds over which the rate limits refill in full; shrink it in tests."""

    def __post_init__(self) -> None:
        """Refuse rate limits that are not positive."""
        for name in (
            "requests_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "rate_window",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigurationError(
                    f"AnthropicEmulatorLimits.{name} must be positive, got {value!r}"
                )

"""Size and count limits the Anthropic emulator enforces, defaulting to the real service's."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1000 * 1000


@dataclass(frozen=True)
class AnthropicEmulatorLimits:
    """Limits of the emulated Message Batches API; shrink them in tests to reach the limit
    errors cheaply.

    The defaults are the documented ones (Batch processing guide, "Batch limitations"; Errors,
    "Request size limits"): at most 100,000 requests and 256 MB per batch, pages of 1 to
    1,000 batches. The byte limit is counted in decimal megabytes, the stricter reading.
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

"""Size and count limits the emulator enforces, defaulting to the real service's limits."""

from __future__ import annotations

from dataclasses import dataclass

from batchor.errors import ConfigurationError

MIB = 1024 * 1024


@dataclass(frozen=True)
class EmulatorLimits:
    """Limits of the emulated service; shrink them in tests to exercise the limit errors cheaply."""

    max_upload_bytes: int = 512 * MIB
    """Largest file ``POST /v1/files`` accepts."""
    max_batch_input_bytes: int = 200 * MIB
    """Largest batch input file; a larger one makes the batch fail during validation."""
    max_batch_lines: int = 50_000
    """Most request lines a batch input file may hold."""
    max_embedding_inputs: int = 50_000
    """Most embedding inputs (strings or token arrays, summed over every request's
    ``input``) an ``/v1/embeddings`` batch may hold."""
    max_json_body_bytes: int = 1 * MIB
    """Largest JSON request body accepted by the JSON endpoints."""
    max_validation_errors: int = 100
    """Most entries reported in a failed batch's ``errors.data``."""
    requests_per_minute: int = 10_000
    """Requests per model per `rate_window` the synchronous endpoints (``POST
    /v1/responses``, ``/v1/chat/completions``, ``/v1/embeddings``) accept before answering
    429 ``rate_limit_exceeded``."""
    tokens_per_minute: int = 10_000_000
    """Estimated tokens per model per `rate_window` the synchronous endpoints accept: each
    request counts the larger of its prompt's estimate (a token per four characters) and
    its ``max_output_tokens`` (``max_completion_tokens``, ``max_tokens``)."""
    rate_window: float = 60.0
    """Seconds over which the rate limits refill in full; shrink it in tests so a
    rate-limited request may be retried within milliseconds."""

    def __post_init__(self) -> None:
        """Refuse rate limits that are not positive."""
        for name in ("requests_per_minute", "tokens_per_minute", "rate_window"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigurationError(f"EmulatorLimits.{name} must be positive, got {value!r}")

    @classmethod
    def azure(cls) -> EmulatorLimits:
        """Azure OpenAI global batch's documented limits: 100,000 requests and 200 MB per
        input file (the emulator never expires a batch by itself either, as Azure does
        not)."""
        return cls(max_batch_lines=100_000, max_batch_input_bytes=200 * MIB)

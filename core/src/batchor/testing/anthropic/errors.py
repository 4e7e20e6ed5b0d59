"""Errors in the shape the Anthropic API answers them.

Every error body is ``{"type": "error", "error": {"type": ..., "message": ...},
"request_id": ...}`` (API reference, "Errors": "Error shapes"); the HTTP status goes with
the error type (400 ``invalid_request_error``, 401 ``authentication_error``, 404
``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``, 500 ``api_error``,
529 ``overloaded_error``).
"""

from __future__ import annotations

from typing import Any


class AnthropicApiError(Exception):
    """An HTTP error answered with Anthropic's error body."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the error; ``headers`` are added to the HTTP response."""
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = dict(headers or {})

    def body(self, request_id: str | None) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {
            "type": "error",
            "error": {"type": self.type, "message": self.message},
            "request_id": request_id,
        }


def invalid_request(message: str) -> AnthropicApiError:
    """A 400 ``invalid_request_error``."""
    return AnthropicApiError(400, "invalid_request_error", message)


def not_found(message: str = "Not Found") -> AnthropicApiError:
    """A 404 ``not_found_error``."""
    return AnthropicApiError(404, "not_found_error", message)


def authentication(message: str) -> AnthropicApiError:
    """A 401 ``authentication_error``."""
    return AnthropicApiError(401, "authentication_error", message)


def request_too_large(limit: int) -> AnthropicApiError:
    """The 413 ``request_too_large`` of a body over the batch size limit."""
    return AnthropicApiError(
        413,
        "request_too_large",
        f"Request exceeds the maximum allowed number of bytes ({limit}).",
    )


def api_error() -> AnthropicApiError:
    """A 500 ``api_error`` (an unexpected internal error)."""
    return AnthropicApiError(500, "api_error", "Internal server error")


def overloaded() -> AnthropicApiError:
    """A 529 ``overloaded_error``."""
    return AnthropicApiError(529, "overloaded_error", "Overloaded")


def rate_limited() -> AnthropicApiError:
    """A 429 ``rate_limit_error`` asking to retry at once (``retry-after: 0``)."""
    return AnthropicApiError(
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit. Please try again later.",
        headers={"retry-after": "0"},
    )

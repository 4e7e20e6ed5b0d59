"""Google API errors as the Gemini API answers them: ``{"error": {code, message, status}}``.

The HTTP status and the canonical ``status`` name go together as in ``google.rpc.Code``; a
per-line error of a batch output file, or the ``error`` of a finished operation, is a bare
``google.rpc.Status`` (``{"code": <gRPC code>, "message": ...}``), built by `rpc_status`.
"""

from __future__ import annotations

from typing import Any

GRPC_CODES: dict[str, int] = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
"""The gRPC code of each canonical status name (``google.rpc.Code``)."""

INTERNAL_MESSAGE = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
RATE_LIMIT_MESSAGE = "Resource has been exhausted (e.g. check quota)."
UNAVAILABLE_MESSAGE = "The model is overloaded. Please try again later."


def rpc_status(status: str, message: str) -> dict[str, Any]:
    """A ``google.rpc.Status`` JSON object: ``{"code": <gRPC code>, "message": ...}``."""
    return {"code": GRPC_CODES[status], "message": message}


class GoogleApiError(Exception):
    """An HTTP error answered with Google's JSON error body."""

    def __init__(
        self,
        http_status: int,
        status: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the error; ``headers`` are added to the HTTP response."""
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "status": self.status,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


class DropConnection(Exception):
    """Raised by a handler to close the connection without answering."""


def invalid_argument(message: str) -> GoogleApiError:
    """A 400 ``INVALID_ARGUMENT``."""
    return GoogleApiError(400, "INVALID_ARGUMENT", message)


def failed_precondition(message: str) -> GoogleApiError:
    """A 400 ``FAILED_PRECONDITION``."""
    return GoogleApiError(400, "FAILED_PRECONDITION", message)


def not_found(message: str = "Requested entity was not found.") -> GoogleApiError:
    """A 404 ``NOT_FOUND``."""
    return GoogleApiError(404, "NOT_FOUND", message)


def file_not_found(file_id: str) -> GoogleApiError:
    """The Files API's 403 for a file that does not exist (or is not the caller's)."""
    return GoogleApiError(
        403,
        "PERMISSION_DENIED",
        f"You do not have permission to access the File {file_id} or it may not exist.",
    )


def already_exists(message: str) -> GoogleApiError:
    """A 409 ``ALREADY_EXISTS``."""
    return GoogleApiError(409, "ALREADY_EXISTS", message)


def internal_error() -> GoogleApiError:
    """A 500 ``INTERNAL`` as the Gemini API words it."""
    return GoogleApiError(500, "INTERNAL", INTERNAL_MESSAGE)


def unavailable() -> GoogleApiError:
    """A 503 ``UNAVAILABLE`` (the model is overloaded)."""
    return GoogleApiError(503, "UNAVAILABLE", UNAVAILABLE_MESSAGE)


def rate_limited(message: str = RATE_LIMIT_MESSAGE) -> GoogleApiError:
    """A 429 ``RESOURCE_EXHAUSTED``."""
    return GoogleApiError(429, "RESOURCE_EXHAUSTED", message)


def api_key_invalid() -> GoogleApiError:
    """The 400 the API answers a wrong API key with (``reason: API_KEY_INVALID``)."""
    message = "API key not valid. Please pass a valid API key."
    return GoogleApiError(
        400,
        "INVALID_ARGUMENT",
        message,
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ],
    )


def api_key_missing() -> GoogleApiError:
    """The 403 the API answers a request without any credential with."""
    return GoogleApiError(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def unknown_field(name: str, where: str) -> GoogleApiError:
    """The 400 a JSON body naming a field the message does not have gets."""
    return invalid_argument(unknown_field_message(name, where))


def unknown_field_message(name: str, where: str) -> str:
    """The message of `unknown_field` (also used for per-line errors); ``where`` is the
    field path of the enclosing message, ``""`` at the top of the body."""
    at = f" at '{where}'" if where else ""
    return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'

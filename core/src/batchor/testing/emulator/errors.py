"""API errors raised by the emulator: OpenAI error bodies, and Azure OpenAI's gateway errors."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the error; ``headers`` are added to the HTTP response."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = "id") -> ApiError:
    """A 404 ``invalid_request_error``."""
    return ApiError(404, message, param=param)


def server_error() -> ApiError:
    """A 500 ``server_error`` as the real service answers it."""
    return ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


# -- Azure OpenAI gateway errors -----------------------------------------------------------------


class GatewayError(ApiError):
    """An error answered with a fixed JSON body, as Azure's gateway words it (not OpenAI's)."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        """Answer ``status`` with ``payload`` as the body."""
        message = payload.get("message") or payload.get("error", {}).get("message", "")
        super().__init__(status, str(message))
        self.payload = payload

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response, as given."""
        return self.payload


def azure_error(status: int, code: str, message: str) -> GatewayError:
    """Azure's ``{"error": {"code", "message"}}`` shape."""
    return GatewayError(status, {"error": {"code": code, "message": message}})


def azure_resource_not_found() -> GatewayError:
    """Azure's 404 for an unknown path or a request without ``api-version``."""
    return azure_error(404, "404", "Resource not found")


def azure_unsupported_api_version() -> GatewayError:
    """Azure's 400 for an ``api-version`` it does not serve."""
    return azure_error(400, "BadRequest", "API version not supported")


def azure_invalid_key() -> GatewayError:
    """Azure's 401 for a wrong ``api-key`` header."""
    return azure_error(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource.",
    )


def azure_missing_key() -> GatewayError:
    """Azure's 401 for a request with neither an ``api-key`` header nor a bearer token."""
    return azure_error(
        401,
        "401",
        "Access denied due to missing subscription key. Make sure to include subscription key "
        "when making requests to an API.",
    )


def azure_invalid_token() -> GatewayError:
    """Azure's 401 for a bad Entra ID bearer token (a top-level ``statusCode`` body)."""
    return GatewayError(
        401,
        {
            "statusCode": 401,
            "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or have expired.",
        },
    )

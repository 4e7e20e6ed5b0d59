"""Signature checks of incoming webhooks, done by the ``openai`` SDK, and the signing
secret they use."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

from batchor.errors import ConfigurationError

WEBHOOK_SECRET_ENV = "OPENAI_WEBHOOK_SECRET"
"""The environment variable the signing secret is read from when none is passed (the
``openai`` SDK's own)."""

TOLERANCE_SECONDS = 300
"""How old (or how far in the future) a ``webhook-timestamp`` may be: the SDK's tolerance."""

# The SDK builds a client to verify with; it never calls the API, so it needs no real key.
_NO_KEY = "unused-webhook-verification-only"


class WebhookRejected(Exception):
    """An incoming webhook is not a valid, signed event (the message says why; it never
    holds the secret)."""


def webhook_secret(secret: str | None = None) -> str:
    """The signing secret: ``secret``, else ``$OPENAI_WEBHOOK_SECRET``.

    Raises:
        ConfigurationError: there is none, or a ``whsec_`` secret is not base64 (the message
            names where it came from, never its value).
    """
    where = "the secret argument" if secret is not None else WEBHOOK_SECRET_ENV
    value = secret if secret is not None else os.environ.get(WEBHOOK_SECRET_ENV)
    if not value or not value.strip():
        raise ConfigurationError(
            f"no webhook signing secret: set the {WEBHOOK_SECRET_ENV} environment variable "
            "(the whsec_... secret of the endpoint in OpenAI's dashboard) or pass secret="
        )
    if value.startswith("whsec_"):
        try:
            base64.b64decode(value[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"the webhook signing secret in {where} is not valid: expected whsec_ "
                "followed by base64"
            ) from None
    return value


class WebhookVerifier:
    """Checks a webhook's signature and age with ``openai``'s ``client.webhooks.unwrap``
    (Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
    headers, an HMAC-SHA256 of ``"{id}.{timestamp}.{body}"``) and parses its event.

    Args:
        secret: The signing secret (see `webhook_secret`).
    """

    def __init__(self, secret: str) -> None:
        """Build the SDK client that verifies (it never calls the API)."""
        import openai

        self._errors: tuple[type[Exception], ...] = (openai.InvalidWebhookSignatureError,)
        self._client = openai.OpenAI(
            api_key=_NO_KEY, webhook_secret=secret, base_url="http://127.0.0.1:9", max_retries=0
        )

    def __repr__(self) -> str:
        """Never shows the secret."""
        return "<WebhookVerifier>"

    def unwrap(self, body: bytes, headers: Mapping[str, str]) -> Any:
        """The event ``body`` holds, once its signature and timestamp are checked.

        Raises:
            WebhookRejected: a header is missing, the timestamp is outside the SDK's
                tolerance, no signature matches, or the body is not JSON.
        """
        try:
            return self._client.webhooks.unwrap(body, dict(headers))
        except self._errors as exc:
            raise WebhookRejected(str(exc)) from None
        except ValueError as exc:  # a missing header, a body that is not UTF-8 JSON
            raise WebhookRejected(f"{type(exc).__name__}: {exc}") from None

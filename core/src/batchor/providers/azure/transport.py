"""The Azure OpenAI Files and Batches API through the ``openai`` SDK's ``AzureOpenAI``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from batchor.errors import ConfigurationError, ProviderAuthError
from batchor.providers.openai.transport import OpenAITransport

if TYPE_CHECKING:
    from openai import OpenAI

MISSING_ENDPOINT = (
    "no Azure OpenAI endpoint: set the AZURE_OPENAI_ENDPOINT environment variable (from "
    "Python, AzureOpenAIProviderConfig(azure_endpoint=...))"
)
MISSING_API_VERSION = (
    "no Azure OpenAI API version: set the OPENAI_API_VERSION environment variable, e.g. "
    "2024-10-21 (from Python, AzureOpenAIProviderConfig(api_version=...))"
)


def _setting(given: str | None, variable: str) -> str | None:
    """``given``, else the environment variable; blank counts as unset."""
    value = given if given is not None else os.environ.get(variable)
    return value if value and value.strip() else None


class AzureOpenAITransport(OpenAITransport):
    """Azure OpenAI's Files and Batches API through the SDK's ``AzureOpenAI`` client (a
    `BatchTransport`). Every call, its retries and its error classification are
    `OpenAITransport`'s: only the client differs (``/openai/...`` URLs with an
    ``api-version`` query and the ``api-key`` header).

    The client is made on first use. Endpoint, API version and key are the given ones, else
    ``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION`` and ``AZURE_OPENAI_API_KEY``.

    Args:
        azure_endpoint: The resource endpoint (``https://NAME.openai.azure.com``).
        api_key: The key.
        api_version: The data-plane API version (e.g. ``2024-10-21``).
        max_retries: Retries of idempotent calls on transient errors (never of a create).
        timeout: Seconds per call.
        create_timeout: Seconds a batch create may take before it is given up.
    """

    missing_key = (
        "no Azure OpenAI API key: set the AZURE_OPENAI_API_KEY environment variable (from "
        "Python, AzureOpenAIProviderConfig(api_key=...) or BatchRunner(credentials={'azure': ...}))"
    )

    def __init__(
        self,
        azure_endpoint: str | None = None,
        api_key: str | None = None,
        api_version: str | None = None,
        *,
        max_retries: int = 4,
        timeout: float = 600.0,
        create_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=None,
            max_retries=max_retries,
            timeout=timeout,
            create_timeout=create_timeout,
        )
        self._azure_endpoint = azure_endpoint
        self._api_version = api_version

    def _new_client(self) -> OpenAI:
        """An ``AzureOpenAI`` client.

        Raises:
            ConfigurationError: no endpoint or no API version is configured.
            ProviderAuthError: no key (nor an Entra ID token in ``AZURE_OPENAI_AD_TOKEN``).
        """
        import openai

        endpoint = _setting(self._azure_endpoint, "AZURE_OPENAI_ENDPOINT")
        if endpoint is None:
            raise ConfigurationError(MISSING_ENDPOINT)
        version = _setting(self._api_version, "OPENAI_API_VERSION")
        if version is None:
            raise ConfigurationError(MISSING_API_VERSION)
        key = _setting(self._api_key, "AZURE_OPENAI_API_KEY")
        if key is None and _setting(None, "AZURE_OPENAI_AD_TOKEN") is None:
            raise ProviderAuthError(self.missing_key)
        return openai.AzureOpenAI(
            azure_endpoint=endpoint,
            api_key=key,
            api_version=version,
            max_retries=self._max_retries,
            timeout=self._timeout,
        )

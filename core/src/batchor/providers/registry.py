"""The providers batchor knows, by the name recorded with each run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchor.errors import ConfigurationError
from batchor.providers.anthropic.config import AnthropicProviderConfig
from batchor.providers.azure.config import AzureOpenAIProviderConfig
from batchor.providers.base import ProviderConfig, ProviderCredentials
from batchor.providers.gemini.config import GeminiProviderConfig
from batchor.providers.openai.config import OpenAIProviderConfig

#: A job's provider settings: the config's type chooses the provider.
ProviderConfigs = (
    OpenAIProviderConfig
    | AzureOpenAIProviderConfig
    | AnthropicProviderConfig
    | GeminiProviderConfig
)

#: The provider of a run whose stored configuration names none (runs made before there were
#: others).
DEFAULT_PROVIDER = "openai"

_BY_NAME: dict[str, Any] = {
    "openai": OpenAIProviderConfig,
    "azure": AzureOpenAIProviderConfig,
    "anthropic": AnthropicProviderConfig,
    "gemini": GeminiProviderConfig,
}


def provider_names() -> tuple[str, ...]:
    """The names of the providers batchor knows."""
    return tuple(_BY_NAME)


def provider_of(record: Mapping[str, Any]) -> str:
    """The name of the provider a run's stored configuration was made with."""
    return str(record.get("provider") or DEFAULT_PROVIDER)


def config_from_record(record: Mapping[str, Any], *, base_url: str | None = None) -> ProviderConfig:
    """The provider config a run was stored with (``base_url`` overrides the stored one).

    Raises:
        ConfigurationError: the run names a provider this batchor does not know.
    """
    name = provider_of(record)
    cls = _BY_NAME.get(name)
    if cls is None:
        raise ConfigurationError(
            f"the run was made with provider {name!r}, which this batchor does not know "
            f"(it knows {', '.join(_BY_NAME)}); upgrade batchor or install its extra"
        )
    config: ProviderConfig = cls.from_record(record, base_url=base_url)
    return config


def check_config(owner: str, config: object) -> None:
    """Refuse anything but a provider config.

    Raises:
        ConfigurationError: names the type given.
    """
    if not isinstance(config, tuple(_BY_NAME.values())):
        known = ", ".join(c.__name__ for c in _BY_NAME.values())
        raise ConfigurationError(
            f"{owner} must be a provider config ({known}), got {type(config).__name__}"
        )


def credentials_by_provider(
    credentials: Mapping[str, ProviderCredentials | str] | None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
) -> dict[str, ProviderCredentials]:
    """A runner's credentials by provider name: ``credentials`` (a plain string is a key),
    with ``api_key`` / ``base_url`` as OpenAI's.

    Raises:
        ConfigurationError: an unknown provider name, a value of another type, or OpenAI's
            credentials given both ways.
    """
    result: dict[str, ProviderCredentials] = {}
    for name, value in (credentials or {}).items():
        if name not in _BY_NAME:
            raise ConfigurationError(
                f"credentials for unknown provider {name!r}: the providers are "
                f"{', '.join(_BY_NAME)}"
            )
        if isinstance(value, str):
            value = ProviderCredentials(api_key=value)
        if not isinstance(value, ProviderCredentials):
            raise ConfigurationError(
                f"credentials[{name!r}] must be a key or a ProviderCredentials, "
                f"got {type(value).__name__}"
            )
        result[name] = ProviderCredentials(
            api_key=value.api_key or None, base_url=value.base_url or None
        )
    if api_key or base_url:
        if "openai" in result:
            raise ConfigurationError(
                "OpenAI credentials given twice: pass api_key=/base_url= or "
                "credentials={'openai': ...}, not both"
            )
        result["openai"] = ProviderCredentials(api_key=api_key or None, base_url=base_url or None)
    return result


def credentials_from(
    api_keys: Mapping[str, str], base_urls: Mapping[str, str]
) -> dict[str, ProviderCredentials]:
    """Credentials by provider name from keys and base URLs kept apart by provider name (as
    orchestrators' settings keep them: the keys secret, the URLs not); names are checked by
    `credentials_by_provider` when a runner takes them."""
    return {
        name: ProviderCredentials(api_key=api_keys.get(name), base_url=base_urls.get(name))
        for name in {**api_keys, **base_urls}
    }

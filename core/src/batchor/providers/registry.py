"""The providers batchor knows, by the name recorded with each run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchor.errors import ConfigurationError
from batchor.providers.anthropic.config import AnthropicProviderConfig
from batchor.providers.azure.config import AzureOpenAIProviderConfig
from batchor.providers.base import ProviderConfig
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


def config_from_record(record: Mapping[str, Any], *, base_url: str | None = None) -> ProviderConfig:
    """The provider config a run was stored with (``base_url`` overrides the stored one).

    Raises:
        ConfigurationError: the run names a provider this batchor does not know.
    """
    name = str(record.get("provider") or DEFAULT_PROVIDER)
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

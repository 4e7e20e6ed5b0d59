"""`BatchRunner(credentials=...)`: keys and base URLs by provider, checked before anything is
opened, and given to a run's transport only when the run is of that provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchor import (
    AnthropicProviderConfig,
    BatchRunner,
    ConfigurationError,
    GeminiProviderConfig,
    OpenAIProviderConfig,
    ProviderCredentials,
)
from batchor.providers.registry import config_from_record, credentials_by_provider


def test_a_plain_string_is_a_key_and_openai_settings_are_openai_credentials() -> None:
    found = credentials_by_provider(
        {"anthropic": "sk-ant", "gemini": ProviderCredentials(base_url="http://g")},
        api_key="sk-oa",
    )
    assert found == {
        "anthropic": ProviderCredentials(api_key="sk-ant"),
        "gemini": ProviderCredentials(base_url="http://g"),
        "openai": ProviderCredentials(api_key="sk-oa"),
    }
    assert credentials_by_provider(None) == {}
    # Blank values count as unset, as blank environment variables do.
    assert credentials_by_provider({"azure": ProviderCredentials(api_key="")}) == {
        "azure": ProviderCredentials()
    }


@pytest.mark.parametrize(
    ("credentials", "openai_key", "match"),
    [
        ({"claude": "k"}, None, r"unknown provider 'claude': the providers are openai, azure"),
        ({"gemini": 42}, None, r"credentials\['gemini'\] must be a key or a ProviderCredentials"),
        ({"openai": "k"}, "k2", "OpenAI credentials given twice"),
    ],
)
def test_bad_credentials_are_refused_before_the_store_is_opened(
    tmp_path: Path, credentials: dict[str, object], openai_key: str | None, match: str
) -> None:
    store = tmp_path / "never" / "batchor.db"
    with pytest.raises(ConfigurationError, match=match):
        BatchRunner(
            f"sqlite:///{store}", tmp_path / "a", api_key=openai_key, credentials=credentials
        )  # type: ignore[arg-type]
    assert not store.parent.exists()


def test_the_key_is_never_shown() -> None:
    shown = repr(ProviderCredentials(api_key="sk-hidden-1", base_url="http://x"))
    assert "sk-hidden-1" not in shown
    assert "http://x" in shown


def test_each_provider_takes_only_its_own_credentials() -> None:
    reach = {
        "openai": ProviderCredentials(api_key="k-openai", base_url="http://openai/v1"),
        "anthropic": ProviderCredentials(api_key="k-anthropic", base_url="http://anthropic"),
        "gemini": ProviderCredentials(api_key="k-gemini", base_url="http://gemini"),
    }
    runner = BatchRunner("memory://", "memory://unit/credentials", credentials=reach)
    configs = [
        OpenAIProviderConfig(model="gpt-4o-mini"),
        AnthropicProviderConfig(model="claude-haiku-4-5", max_tokens=8),
        GeminiProviderConfig(model="gemini-2.5-flash"),
    ]
    for config in configs:
        transport = runner._transport_for(config)
        name = config.provider_name
        assert vars(transport).get("_api_key") == f"k-{name}", name
        # A stored run is rebuilt with the runner's base URL for its provider.
        rebuilt = config_from_record(config.record(), base_url=reach[name].base_url)
        assert getattr(rebuilt, "base_url", None) == reach[name].base_url
    # A config's own key wins over the runner's.
    own = AnthropicProviderConfig(model="claude-haiku-4-5", max_tokens=8, api_key="k-own")
    assert vars(runner._transport_for(own)).get("_api_key") == "k-own"
    runner.close()

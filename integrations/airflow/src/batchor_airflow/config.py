"""Where a batchor run lives and how to reach the provider, resolved from an Airflow
connection and the environment (no Airflow import: the trigger and the hook share it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchor import BatchRunner, ConfigurationError, ProviderCredentials
from batchor.providers.registry import DEFAULT_PROVIDER, provider_names

STORE_EXTRA = "batchor_store"
"""Connection extra naming the batchor store URL."""
ARTIFACTS_EXTRA = "batchor_artifacts"
"""Connection extra naming the batchor artifacts location."""
PROVIDER_EXTRA = "provider"
"""Connection extra naming the provider the connection's key and host are for."""


@dataclass(frozen=True, slots=True)
class BatchorConfig:
    """What a `BatchRunner` needs; the key is never shown in its ``repr``.

    Attributes:
        store: The store URL, or ``None`` for ``BATCHOR_STORE``, else batchor's default.
        artifacts: The artifacts location, or ``None`` for ``BATCHOR_ARTIFACTS``, else
            batchor's default.
        provider: The provider the key and base URL are for (``openai``, ``azure``,
            ``anthropic``, ``gemini``); runs of other providers take theirs from the
            environment.
        api_key: The provider key, or ``None`` to let the SDK read its variable
            (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...).
        base_url: The API base URL (for Azure, the resource endpoint), or ``None`` for the
            run's own or the provider's variable.
    """

    store: str | None = None
    artifacts: str | None = None
    provider: str = DEFAULT_PROVIDER
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None

    def runner(self, *, credentials: bool = True) -> BatchRunner:
        """A runner on this store and artifacts; without ``credentials`` it holds no key
        (enough to read a run's status and results)."""
        reach = ProviderCredentials(
            api_key=self.api_key if credentials else None, base_url=self.base_url
        )
        return BatchRunner(
            store=self.store,
            artifacts=self.artifacts,
            credentials={self.provider: reach},
        )


def resolve_config(
    connection: Any | None,
    *,
    store: str | None = None,
    artifacts: str | None = None,
) -> BatchorConfig:
    """The configuration from explicit arguments, then the connection (its ``batchor_store``
    and ``batchor_artifacts`` extras, password as key and host as base URL, for the provider
    its ``provider`` extra names, else its connection type when that is a provider's name,
    else ``openai``). What neither gives is left to `BatchRunner` (``BATCHOR_STORE`` /
    ``BATCHOR_ARTIFACTS``, then its defaults) and to the provider's SDK (``OPENAI_API_KEY``,
    ``ANTHROPIC_API_KEY``, ...); ``connection`` is ``None`` when it does not exist.

    Raises:
        ConfigurationError: the ``provider`` extra names no provider batchor knows.
    """
    extra: Mapping[str, Any] = {}
    api_key = base_url = None
    provider = DEFAULT_PROVIDER
    if connection is not None:
        extra = connection.extra_dejson or {}
        api_key = connection.password or None
        base_url = _base_url(connection.host)
        provider = _provider(connection.conn_id, extra.get(PROVIDER_EXTRA), connection.conn_type)
    return BatchorConfig(
        store=store or extra.get(STORE_EXTRA) or None,
        artifacts=artifacts or extra.get(ARTIFACTS_EXTRA) or None,
        provider=provider,
        api_key=api_key,
        base_url=base_url,
    )


def _provider(conn_id: str | None, named: Any, conn_type: str | None) -> str:
    """The provider a connection's key is for: its ``provider`` extra, else its type when
    that is a provider's name, else OpenAI."""
    known = provider_names()
    if named:
        if named not in known:
            raise ConfigurationError(
                f"connection {conn_id!r}: extra {PROVIDER_EXTRA!r} is {named!r}; "
                f"the providers are {', '.join(known)}"
            )
        return str(named)
    return conn_type if conn_type in known else DEFAULT_PROVIDER


def _base_url(host: str | None) -> str | None:
    """The connection's host as an API base URL (``https://`` assumed without a scheme)."""
    if not host:
        return None
    return host if "://" in host else f"https://{host}"

"""Where a batchor run lives and how to reach the provider, resolved from an Airflow
connection and the environment (no Airflow import: the trigger and the hook share it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchor import BatchRunner

STORE_EXTRA = "batchor_store"
"""Connection extra naming the batchor store URL."""
ARTIFACTS_EXTRA = "batchor_artifacts"
"""Connection extra naming the batchor artifacts location."""


@dataclass(frozen=True, slots=True)
class BatchorConfig:
    """What a `BatchRunner` needs; the key is never shown in its ``repr``.

    Attributes:
        store: The store URL, or ``None`` for ``BATCHOR_STORE``, else batchor's default.
        artifacts: The artifacts location, or ``None`` for ``BATCHOR_ARTIFACTS``, else
            batchor's default.
        api_key: The provider key, or ``None`` to let the SDK read ``OPENAI_API_KEY``.
        base_url: The API base URL, or ``None`` for the run's own or ``OPENAI_BASE_URL``.
    """

    store: str | None = None
    artifacts: str | None = None
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None

    def runner(self, *, credentials: bool = True) -> BatchRunner:
        """A runner on this store and artifacts; without ``credentials`` it holds no key
        (enough to read a run's status and results)."""
        return BatchRunner(
            store=self.store,
            artifacts=self.artifacts,
            api_key=self.api_key if credentials else None,
            base_url=self.base_url,
        )


def resolve_config(
    connection: Any | None,
    *,
    store: str | None = None,
    artifacts: str | None = None,
) -> BatchorConfig:
    """The configuration from explicit arguments, then the connection (its ``batchor_store``
    and ``batchor_artifacts`` extras, password as key and host as base URL). What neither
    gives is left to `BatchRunner` (``BATCHOR_STORE`` / ``BATCHOR_ARTIFACTS``, then its
    defaults) and to the openai SDK (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``); ``connection``
    is ``None`` when it does not exist."""
    extra: Mapping[str, Any] = {}
    api_key = base_url = None
    if connection is not None:
        extra = connection.extra_dejson or {}
        api_key = connection.password or None
        base_url = _base_url(connection.host)
    return BatchorConfig(
        store=store or extra.get(STORE_EXTRA) or None,
        artifacts=artifacts or extra.get(ARTIFACTS_EXTRA) or None,
        api_key=api_key,
        base_url=base_url,
    )


def _base_url(host: str | None) -> str | None:
    """The connection's host as an API base URL (``https://`` assumed without a scheme)."""
    if not host:
        return None
    return host if "://" in host else f"https://{host}"

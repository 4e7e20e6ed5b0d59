"""`BatchorHook`: the batchor store, artifacts and provider credentials of an Airflow
connection (the ``openai`` connection form, for any provider), falling back to the
environment."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from batchor import BatchRunner
from batchor_airflow.config import BatchorConfig, resolve_config


class BatchorHook(BaseHook):
    """Opens `BatchRunner` objects from an Airflow connection.

    The connection uses the ``openai`` format for any provider: **password** is the API key,
    **host** the API base URL (for Azure, the resource endpoint; when empty: the one stored
    with the run, else the provider's variable, else the public API). They are for the
    provider its ``provider`` extra names (``openai``, ``azure``, ``anthropic``, ``gemini``),
    else its connection type when that is one of these names (``anthropic://:KEY@`` in an
    ``AIRFLOW_CONN_...`` URI), else OpenAI; runs of another provider take their key from the
    worker's environment. Its extras may also name the batchor store (``batchor_store``) and
    artifacts (``batchor_artifacts``). When the connection does not exist, the providers'
    variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...), ``BATCHOR_STORE`` and
    ``BATCHOR_ARTIFACTS`` apply. The constructor reads nothing. Use one connection (and
    ``conn_id``) per provider.

    Args:
        conn_id: The Airflow connection id.
        store: A store URL that overrides the connection's and the environment's (an empty
            string, as an unset templated field renders, counts as none).
        artifacts: An artifacts location that overrides the connection's and the
            environment's (empty: none).
    """

    conn_name_attr = "conn_id"
    default_conn_name = "openai_default"
    conn_type = "openai"
    hook_name = "batchor (provider batch APIs)"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        store: str | None = None,
        artifacts: str | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        """The Airflow connection id."""
        self.store = store or None
        """The explicit store URL, if any."""
        self.artifacts = artifacts or None
        """The explicit artifacts location, if any."""

    def get_conn(self) -> BatchRunner:
        """A `BatchRunner` with credentials (same as `get_runner`)."""
        return self.get_runner()

    def get_config(self) -> BatchorConfig:
        """Resolve the store, artifacts, key and base URL (reads the connection)."""
        return resolve_config(self._connection(), store=self.store, artifacts=self.artifacts)

    async def aget_config(self) -> BatchorConfig:
        """`get_config` for async code (the triggerer): never blocks the event loop."""
        try:
            connection: Any | None = await self.aget_connection(self.conn_id)
        except AirflowNotFoundException:
            connection = None
        return resolve_config(connection, store=self.store, artifacts=self.artifacts)

    def get_runner(self, *, credentials: bool = True) -> BatchRunner:
        """A `BatchRunner` on the resolved store; close it after use (it is a context
        manager). Without ``credentials`` it holds no key: enough to read status and results."""
        return self.get_config().runner(credentials=credentials)

    def _connection(self) -> Any | None:
        try:
            return self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            self.log.info("connection %r not defined: using the environment", self.conn_id)
            return None

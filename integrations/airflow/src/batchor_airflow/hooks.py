"""`BatchorHook`: the batchor store, artifacts and provider credentials of an Airflow
connection in the ``openai`` format, falling back to the environment."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from batchor import BatchRunner
from batchor_airflow.config import BatchorConfig, resolve_config


class BatchorHook(BaseHook):
    """Opens `BatchRunner` objects from an Airflow connection.

    The connection uses the ``openai`` format: **password** is the API key, **host** the API
    base URL (when empty: the one stored with the run, else ``OPENAI_BASE_URL``, else the
    public API). Its extras may name the batchor
    store (``batchor_store``) and artifacts (``batchor_artifacts``). When the connection does
    not exist, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``BATCHOR_STORE`` and
    ``BATCHOR_ARTIFACTS`` apply. The constructor reads nothing.

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
    hook_name = "batchor (OpenAI Batch API)"

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

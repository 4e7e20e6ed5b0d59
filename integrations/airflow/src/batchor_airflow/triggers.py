"""`BatchorRunTrigger`: waits in the triggerer for a batchor run, reading only its cheap
status from the store, and wakes the task to take the next step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from batchor import RunStateError
from batchor_airflow.config import BatchorConfig
from batchor_airflow.hooks import BatchorHook


class BatchorRunTrigger(BaseTrigger):
    """Fires once the run is terminal in the store, or after ``poll_interval`` seconds.

    It never talks to the provider and never holds the key: every ``check_interval`` seconds
    it reads the run's summary from the store (in a thread, so the event loop never
    blocks). A run advances only when someone polls the provider, so after
    ``poll_interval`` the trigger fires anyway and the task takes one step on a worker
    (poll the provider, collect ended batches, submit the next ones), then defers again.
    Its kwargs hold the run id, the connection id and explicit store or artifacts
    locations, never credentials.

    Args:
        run_id: The batchor run.
        conn_id: The Airflow connection of the store, artifacts and (for ``on_kill``) key.
        store: An explicit store URL (else the connection's, else ``BATCHOR_STORE``).
        artifacts: An explicit artifacts location.
        poll_interval: Seconds before the task is woken to poll the provider.
        check_interval: Seconds between two reads of the store.
        cancel_on_kill: Cancel the run's live provider batches when a user kills the task
            while it is deferred.
    """

    def __init__(
        self,
        run_id: str,
        conn_id: str = BatchorHook.default_conn_name,
        store: str | None = None,
        artifacts: str | None = None,
        poll_interval: float = 60.0,
        check_interval: float = 30.0,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.run_id = run_id
        self.conn_id = conn_id
        self.store = store
        self.artifacts = artifacts
        self.poll_interval = float(poll_interval)
        self.check_interval = float(check_interval)
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments (no secret among them)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "conn_id": self.conn_id,
                "store": self.store,
                "artifacts": self.artifacts,
                "poll_interval": self.poll_interval,
                "check_interval": self.check_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _hook(self) -> BatchorHook:
        return BatchorHook(self.conn_id, store=self.store, artifacts=self.artifacts)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield one event: ``{"run_id", "status", "reason"}`` where ``reason`` is
        ``terminal``, ``poll`` (time to take a step) or ``error`` (the store could not be
        read; the task's next step reports the error properly)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_interval
        try:
            config = await self._hook().aget_config()
        except Exception as exc:  # the worker's step raises the real error
            yield self._event("error", None, f"{type(exc).__name__}: {exc}")
            return
        while True:
            try:
                status = await asyncio.to_thread(_read_status, config, self.run_id)
            except Exception as exc:  # the worker's step raises the real error
                yield self._event("error", None, f"{type(exc).__name__}: {exc}")
                return
            if status[1]:
                yield self._event("terminal", status[0])
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                yield self._event("poll", status[0])
                return
            await asyncio.sleep(min(self.check_interval, remaining))

    def _event(self, reason: str, status: str | None, message: str | None = None) -> TriggerEvent:
        payload: dict[str, Any] = {"run_id": self.run_id, "status": status, "reason": reason}
        if message is not None:
            payload["message"] = message
        return TriggerEvent(payload)  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """With ``cancel_on_kill``, cancel the run and its live provider batches (the key
        is resolved here, in the triggerer, from the connection or the environment)."""
        if not self.cancel_on_kill:
            return
        config = await self._hook().aget_config()
        await asyncio.to_thread(cancel_run, config, self.run_id)
        self.log.info("run %s: cancelled at the provider (cancel_on_kill)", self.run_id)


def _read_status(config: BatchorConfig, run_id: str) -> tuple[str, bool]:
    """The run's status and whether it is terminal, from the store alone (no provider call)."""
    with config.runner(credentials=False) as runner:
        summary = runner.get_run(run_id).summary()
    return summary.status.value, summary.is_terminal


def cancel_run(config: BatchorConfig, run_id: str) -> None:
    """Cancel ``run_id`` and its batches at the provider; a run that already ended is left
    alone."""
    with config.runner() as runner:
        try:
            runner.get_run(run_id).cancel(remote=True)
        except RunStateError:
            return

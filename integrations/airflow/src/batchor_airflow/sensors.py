"""`BatchorSensor`: waits for a batchor run to end, deferred or rescheduled, driving it with
one reconcile step per check."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from batchor.pacing import wait_arguments
from batchor_airflow.driving import RunDriver
from batchor_airflow.handles import summary_handle
from batchor_airflow.hooks import BatchorHook


class BatchorSensor(RunDriver, BaseSensorOperator):
    """Wait until a run is terminal; each check is one step (`batchor.steps.poll`), so the
    sensor also drives the run (collects ended batches, submits new ones).

    Deferrable, it waits in the triggerer between checks (`BatchorRunTrigger`); otherwise
    it uses ``mode="reschedule"`` (no worker slot held between checks) unless another mode
    is given. Returns (XCom) ``{"run_id", "status", "total", "counts"}``.

    Args:
        run_id: The run (templated).
        store: The batchor store URL. Templated.
        artifacts: The artifacts location. Templated.
        conn_id: Airflow connection of the store, artifacts and provider key (see `BatchorHook`).
        deferrable: Defer between checks; default ``[operators] default_deferrable``.
        poll_interval: Seconds between checks (also the ``poke_interval``).
        cancel_on_kill: Cancel the run's live provider batches when the task is killed.
        **kwargs: `BaseSensorOperator` arguments (``timeout``, ``mode``...).
    """

    template_fields: Sequence[str] = ("run_id", "store", "artifacts")
    ui_color = "#fef9c3"

    def __init__(
        self,
        *,
        run_id: str,
        store: str | None = None,
        artifacts: str | None = None,
        conn_id: str = BatchorHook.default_conn_name,
        deferrable: bool | None = None,
        poll_interval: float = 60,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        wait_arguments(None, poll_interval, poll_interval, 0)  # before Airflow reads it
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(conn_id=conn_id, store=store, artifacts=artifacts, **kwargs)
        self.run_id = run_id
        self.drive_with(deferrable, poll_interval, cancel_on_kill)

    def poke(self, context: Context) -> PokeReturnValue:
        """One step; done when the run is terminal."""
        summary = self.step(self.run_id)
        return PokeReturnValue(is_done=summary.is_terminal, xcom_value=summary_handle(summary))

    def execute(self, context: Context) -> Any:
        """Poke or reschedule when not deferrable; otherwise one step, then defer."""
        self.check_rendered()
        if not self.deferrable:
            return super().execute(context)
        return self._check(str(self.run_id), time.time() + float(self.timeout))

    def execute_complete(
        self, context: Context, event: dict[str, Any], deadline: float | None = None
    ) -> dict[str, Any]:
        """Resumed from the trigger: one step, then return or defer again."""
        return self._check(str(event["run_id"]), deadline)

    def _check(self, run_id: str, deadline: float | None) -> dict[str, Any]:
        summary = self.step(run_id)
        if summary.is_terminal:
            return summary_handle(summary)
        remaining = None if deadline is None else deadline - time.time()
        if remaining is not None and remaining <= 0:
            raise AirflowSensorTimeout(f"run {run_id!r} still {summary.status.value}")
        self.defer(
            trigger=self.trigger_for(run_id),
            method_name="execute_complete",
            kwargs={"deadline": deadline},
            timeout=None if remaining is None else timedelta(seconds=remaining),
        )
        raise AssertionError("defer() always raises")  # pragma: no cover

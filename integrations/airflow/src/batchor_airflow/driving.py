"""What the run operator and the sensor share: one reconcile step on the worker, deferring
to `BatchorRunTrigger` between steps (or sleeping when not deferrable), and cancelling on
kill when asked."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowFailException

from batchor import RunSummary, steps
from batchor_airflow.failures import check_not_stuck, fail_permanent_errors
from batchor_airflow.hooks import BatchorHook
from batchor_airflow.triggers import BatchorRunTrigger, cancel_run

CHECK_INTERVAL = 30.0
"""Most seconds between two store reads of a deferred task's trigger."""


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from the Airflow configuration (``False`` if unset)."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


class HookOwner:
    """Mixin for the operators and the sensor: the hook of the task's connection and explicit
    locations. The host class sets ``conn_id``, ``store`` and ``artifacts``."""

    conn_id: str
    store: str | None
    artifacts: str | None
    task_id: str
    template_fields: Collection[str]

    def check_rendered(self) -> None:
        """Fail without retry when a templated string field rendered to nothing (empty or
        blank): no retry renders it differently. Unset (``None``) fields keep their defaults."""
        for name in self.template_fields:
            value = getattr(self, name, None)
            if isinstance(value, str) and not value.strip():
                raise AirflowFailException(
                    f"task {self.task_id!r}: {name}={value!r} rendered to an empty string; "
                    f"fix its template or the values the template reads"
                )

    def get_hook(self) -> BatchorHook:
        """The hook for this task's connection and explicit locations."""
        return BatchorHook(self.conn_id, store=self.store, artifacts=self.artifacts)


class RunDriver(HookOwner):
    """Mixin for operators that wait for a run. The host class sets ``conn_id``, ``store``,
    ``artifacts``, ``poll_interval``, ``cancel_on_kill`` and ``deferrable``."""

    poll_interval: float
    cancel_on_kill: bool
    deferrable: bool
    log: Any
    _live_run_id: str | None = None

    def step(self, run_id: str) -> RunSummary:
        """One reconcile step of ``run_id`` on this worker (`batchor.steps.poll`): poll the
        provider, collect ended batches, submit new ones. Fails without retry when the run
        is paused with nothing in flight."""
        self._live_run_id = run_id
        with fail_permanent_errors(), self.get_hook().get_runner() as runner:
            summary = steps.poll(runner, run_id)
        self.log.info(
            "batchor run %s: %s, %d/%d items done",
            run_id,
            summary.status.value,
            summary.terminal_items,
            summary.total,
        )
        check_not_stuck(summary)
        return summary

    def trigger_for(self, run_id: str) -> BatchorRunTrigger:
        """The trigger that waits for ``run_id`` while the task is deferred."""
        return BatchorRunTrigger(
            run_id=run_id,
            conn_id=self.conn_id,
            store=self.store or None,
            artifacts=self.artifacts or None,
            poll_interval=self.poll_interval,
            check_interval=min(CHECK_INTERVAL, self.poll_interval),
            cancel_on_kill=self.cancel_on_kill,
        )

    def wait_blocking(self, run_id: str) -> RunSummary:
        """Step every ``poll_interval`` seconds on this worker until the run is terminal."""
        while True:
            time.sleep(self.poll_interval)
            summary = self.step(run_id)
            if summary.is_terminal:
                return summary

    def on_kill(self) -> None:
        """With ``cancel_on_kill``, cancel the run's live provider batches when Airflow kills
        the task (on a worker; a deferred task is handled by the trigger's ``on_kill``)."""
        run_id = self._live_run_id
        if not self.cancel_on_kill or run_id is None:
            return
        cancel_run(self.get_hook().get_config(), run_id)
        self.log.info("batchor run %s: cancelled at the provider (cancel_on_kill)", run_id)

"""What the operators and the sensor share: where the run lives, which errors fail a task
without retry, one reconcile step on the worker, the blocking wait (`batchor.steps.wait`) or
the deferral to `BatchorRunTrigger` between steps, progress lines in the task log, and
cancelling on kill when asked."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowFailException

from batchor import RunSummary, WaitTimeout, is_permanent, steps
from batchor.pacing import wait_arguments
from batchor.progress import DEFAULT_PROGRESS_EVERY
from batchor_airflow.hooks import BatchorHook
from batchor_airflow.triggers import BatchorRunTrigger, cancel_run

CHECK_INTERVAL = 30.0
"""Most seconds between two store reads of a deferred task's trigger."""


@contextmanager
def fail_permanent_errors() -> Iterator[None]:
    """Re-raise the errors `batchor.is_permanent` calls permanent as `AirflowFailException` (no
    retry); let anything else, such as `batchor.RunNotReady` or `batchor.ProviderError`,
    propagate to Airflow's retry logic."""
    try:
        yield
    except Exception as exc:
        if is_permanent(exc):
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise


class HookOwner:
    """Mixin for the operators and the sensor: the hook of the task's connection and explicit
    locations (set by its constructor), and the task's log."""

    conn_id: str
    store: str | None
    artifacts: str | None
    task_id: str
    template_fields: Collection[str]
    log: Any

    def __init__(
        self, *, conn_id: str, store: str | None, artifacts: str | None, **kwargs: Any
    ) -> None:
        """Record the task's Airflow connection and its explicit store and artifacts, and pass
        the rest to the operator (its return value a dict: ``op.output["run_id"]`` works)."""
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.store = store
        self.artifacts = artifacts

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

    def report(self, progress: steps.Progress) -> None:
        """Log the run's progress in one line of the task log."""
        self.log.info("batchor %s", progress.describe())


class RunDriver(HookOwner):
    """Mixin for the run operator and the sensor: they drive a run to its end, with the
    settings `drive_with` records."""

    poll_interval: float
    cancel_on_kill: bool
    deferrable: bool
    _live_run_id: str | None = None

    def drive_with(
        self, deferrable: bool | None, poll_interval: float, cancel_on_kill: bool
    ) -> None:
        """Record how the task waits; ``deferrable=None`` reads ``[operators]
        default_deferrable`` from the Airflow configuration (``False`` if unset).

        Raises:
            ConfigurationError: ``poll_interval`` is not a positive number of seconds.
        """
        wait_arguments(None, poll_interval, poll_interval, 0)
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.cancel_on_kill = cancel_on_kill

    def step(self, run_id: str) -> RunSummary:
        """One reconcile step of ``run_id`` on this worker (poll the provider, collect ended
        batches, submit new ones), logged as a progress line. A wait with no time left takes
        exactly that step, and fails (without retry) for a run paused with nothing in flight."""
        self._live_run_id = run_id
        with fail_permanent_errors(), self.get_hook().get_runner() as runner:
            try:
                return steps.wait(runner, run_id, timeout=0, on_progress=self.report)
            except WaitTimeout as not_yet:  # the run goes on
                return not_yet.summary

    def wait_blocking(self, run_id: str) -> RunSummary:
        """Step every ``poll_interval`` seconds on this worker until the run has ended,
        logging its progress at most once a minute (or once a step, if steps are rarer)."""
        self._live_run_id = run_id
        with fail_permanent_errors(), self.get_hook().get_runner() as runner:
            return steps.wait(
                runner,
                run_id,
                on_progress=self.report,
                progress_every=max(DEFAULT_PROGRESS_EVERY, self.poll_interval),
                poll_interval=self.poll_interval,
                max_poll_interval=self.poll_interval,
            )

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

    def on_kill(self) -> None:
        """With ``cancel_on_kill``, cancel the run's live provider batches when Airflow kills
        the task (on a worker; a deferred task is handled by the trigger's ``on_kill``)."""
        run_id = self._live_run_id
        if not self.cancel_on_kill or run_id is None:
            return
        cancel_run(self.get_hook().get_config(), run_id)
        self.log.info("batchor run %s: cancelled at the provider (cancel_on_kill)", run_id)

"""The batchor operators: start a run, collect its results, or do all three steps in one
retry-safe, deferrable task. Each starting operator takes the run's deadline and spending
cap; a run stopped by either fails its task without retry (`batchor.steps.limit_stop`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from batchor import RunSummary, StartedRun, steps
from batchor_airflow.driving import HookOwner, RunDriver, fail_permanent_errors
from batchor_airflow.handles import default_run_id, summary_handle
from batchor_airflow.hooks import BatchorHook

_DEFAULT_CONN = BatchorHook.default_conn_name


def start_run(
    task: HookOwner,
    job: steps.JobSpec,
    job_kwargs: Mapping[str, Any] | None,
    run_id: str,
    *,
    deadline: steps.DeadlineSpec | None = None,
    max_cost_usd: float | str | None = None,
) -> StartedRun:
    """Build the job (`batchor.steps.build_job`, never at parse time) with the task's
    ``deadline`` and ``max_cost_usd`` over its own, and `batchor.steps.start` it as
    ``run_id``, logging its progress. Invalid limits fail without retry."""
    with fail_permanent_errors():
        built = steps.build_job(job, job_kwargs, deadline=deadline, max_cost_usd=max_cost_usd)
        with task.get_hook().get_runner() as runner:
            started = steps.start(runner, built, run_id)
    task.report(steps.Progress.of(started.summary))
    return started


def collect_results(
    hook: BatchorHook, run_id: str, destination: str, *, fail_on_failed_items: bool
) -> dict[str, Any]:
    """`batchor.steps.collect` as a task step: write the results file, return the
    `CollectResult` as a dict; fail without retry (the file is written first) when the run's
    deadline failed items, and on any failed item when asked."""
    with fail_permanent_errors(), hook.get_runner(credentials=False) as runner:
        result = steps.collect(runner, run_id, destination)
        stop = steps.limit_stop(runner.get_run(run_id).summary())
    if stop is not None:  # a deadline: the run has ended and its results are written
        raise AirflowFailException(f"{stop.reason}; results written to {result.uri}")
    failed = result.counts.get("failed", 0)
    if fail_on_failed_items and failed:
        raise AirflowFailException(
            f"run {run_id!r}: {failed} of {result.results} items failed; results in {result.uri}"
        )
    return result.to_dict()


class BatchorStartOperator(HookOwner, BaseOperator):
    """Start a batchor run, or attach to it, and submit what is ready; never waits.

    Returns (XCom) ``{"run_id", "fingerprint", "status", "total", "counts"}``.

    Args:
        job: A callable returning the `batchor.BatchJob`, or its ``"module:function"``
            path; called at execute time with ``job_kwargs``.
        run_id: The run id; default: derived from dag_id, the DAG run id, task_id and
            map_index, so retries and clears attach to the same run. Templated.
        store: The batchor store URL (else the connection's, else ``BATCHOR_STORE``).
            Templated.
        artifacts: The artifacts location (else the connection's, else
            ``BATCHOR_ARTIFACTS``). Templated.
        conn_id: Airflow connection of the store, artifacts and provider key (see `BatchorHook`).
        job_kwargs: Keyword arguments for ``job`` (templated, and mappable with
            ``.expand(job_kwargs=[...])``).
        deadline: When the run must end, over the job's own (`batchor.BatchJob.deadline`):
            a ``timedelta`` from the run's creation, an aware ``datetime``, seconds, or an
            ISO 8601 datetime with offset (templated: ``"{{ data_interval_end +
            macros.timedelta(hours=6) }}"``). Set when the run is created.
        max_cost_usd: The run's spending cap in USD, over the job's own (templated). An
            existing run's cap is only ever raised.
    """

    template_fields: Sequence[str] = (
        "run_id",
        "store",
        "artifacts",
        "job_kwargs",
        "deadline",
        "max_cost_usd",
    )
    ui_color = "#dbeafe"

    def __init__(
        self,
        *,
        job: steps.JobSpec,
        run_id: str | None = None,
        store: str | None = None,
        artifacts: str | None = None,
        conn_id: str = _DEFAULT_CONN,
        job_kwargs: Mapping[str, Any] | None = None,
        deadline: steps.DeadlineSpec | None = None,
        max_cost_usd: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id=conn_id, store=store, artifacts=artifacts, **kwargs)
        self.job = job
        self.run_id = run_id
        self.job_kwargs = job_kwargs
        self.deadline = deadline
        self.max_cost_usd = max_cost_usd

    def execute(self, context: Context) -> dict[str, Any]:
        """Build the job, then `batchor.steps.start` under the task's run id."""
        self.check_rendered()
        started = start_run(
            self,
            self.job,
            self.job_kwargs,
            self.run_id or default_run_id(context),
            deadline=self.deadline,
            max_cost_usd=self.max_cost_usd,
        )
        return {**summary_handle(started.summary), "fingerprint": started.handle.fingerprint}


class BatchorCollectOperator(HookOwner, BaseOperator):
    """Write a terminal run's results to a file and return where they are.

    Returns (XCom) the `batchor.CollectResult` as a dict: ``run_id``, ``uri``,
    ``results``, ``counts``, ``input_tokens``, ``output_tokens``, ``cost_usd``,
    ``run_status``. Collecting again with the same destination writes nothing.

    Args:
        run_id: The run (templated; e.g. ``"{{ ti.xcom_pull('start')['run_id'] }}"``).
        destination: The results file, a path or object-store URI; its extension
            (``.jsonl``, ``.csv``, ``.parquet``) picks the format. Templated.
        store: The batchor store URL. Templated.
        artifacts: The artifacts location. Templated.
        conn_id: Airflow connection of the store, artifacts and provider key (see `BatchorHook`).
        fail_on_failed_items: Fail the task (without retry) when any item failed, after
            writing the file. Items the run's deadline failed always fail the task (after
            writing the file), naming the deadline and their count.
    """

    template_fields: Sequence[str] = ("run_id", "destination", "store", "artifacts")
    ui_color = "#dcfce7"

    def __init__(
        self,
        *,
        run_id: str,
        destination: str,
        store: str | None = None,
        artifacts: str | None = None,
        conn_id: str = _DEFAULT_CONN,
        fail_on_failed_items: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id=conn_id, store=store, artifacts=artifacts, **kwargs)
        self.run_id = run_id
        self.destination = destination
        self.fail_on_failed_items = fail_on_failed_items

    def execute(self, context: Context) -> dict[str, Any]:
        """`batchor.steps.collect`; a run that has not ended raises `batchor.RunNotReady`,
        which Airflow retries."""
        self.check_rendered()
        return collect_results(
            self.get_hook(),
            self.run_id,
            str(self.destination),
            fail_on_failed_items=self.fail_on_failed_items,
        )


class BatchorRunOperator(RunDriver, BaseOperator):
    """Start (or attach to) a run, wait for it, and collect its results, in one task.

    Deferrable: between steps the task is deferred to `BatchorRunTrigger` and holds no
    worker slot; every ``poll_interval`` seconds it resumes on a worker for one step
    (provider poll, collect ended batches, submit new ones), and once the run is terminal it
    writes the results file on the worker. Not deferrable, it waits on its worker
    (`batchor.steps.wait`). Either way it logs the run's progress in one line as it goes.
    A retried, cleared or re-run task instance attaches to the same run: nothing is
    submitted twice.

    Limits: a run paused at its spending cap fails the task without retry once nothing is
    in flight, naming the cap and ``batchor resume RUN --max-cost-usd N`` (then clear the
    task: it attaches to the resumed run). A run whose deadline failed items fails the task
    without retry after its results file is written, naming the deadline and the count.

    Returns (XCom) the `batchor.CollectResult` as a dict (see `BatchorCollectOperator`).

    Args:
        job: A callable returning the `batchor.BatchJob`, or its ``"module:function"``
            path; called at execute time (never at parse time) with ``job_kwargs``.
        destination: The results file, a path or object-store URI; its extension picks the
            format. Templated.
        run_id: The run id; default: derived from dag_id, the DAG run id, task_id and
            map_index. Templated, so a business key works, such as
            ``"reviews-{{ (dag_run.logical_date or dag_run.run_after) | ds }}"`` (manual
            runs have no logical date, so no ``ds``). A field that renders to an empty string
            fails the task without retry.
        store: The batchor store URL. Templated.
        artifacts: The artifacts location. Templated.
        conn_id: Airflow connection of the store, artifacts and provider key (see `BatchorHook`).
        deferrable: Defer between steps; default ``[operators] default_deferrable``.
        poll_interval: Seconds between two steps.
        cancel_on_kill: When the task is killed (or, deferred, its trigger), cancel the
            run's live provider batches. Off by default: cancelling is irreversible.
        fail_on_failed_items: Fail without retry when any item failed (after writing the file).
        job_kwargs: Keyword arguments for ``job`` (templated and mappable).
        deadline: When the run must end, over the job's own (see `BatchorStartOperator`).
            Templated.
        max_cost_usd: The run's spending cap in USD, over the job's own. Templated.
    """

    template_fields: Sequence[str] = (
        "run_id",
        "destination",
        "store",
        "artifacts",
        "job_kwargs",
        "deadline",
        "max_cost_usd",
    )
    ui_color = "#e0e7ff"

    def __init__(
        self,
        *,
        job: steps.JobSpec,
        destination: str,
        run_id: str | None = None,
        store: str | None = None,
        artifacts: str | None = None,
        conn_id: str = _DEFAULT_CONN,
        deferrable: bool | None = None,
        poll_interval: float = 60,
        cancel_on_kill: bool = False,
        fail_on_failed_items: bool = False,
        job_kwargs: Mapping[str, Any] | None = None,
        deadline: steps.DeadlineSpec | None = None,
        max_cost_usd: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id=conn_id, store=store, artifacts=artifacts, **kwargs)
        self.job = job
        self.destination = destination
        self.run_id = run_id
        self.drive_with(deferrable, poll_interval, cancel_on_kill)
        self.fail_on_failed_items = fail_on_failed_items
        self.job_kwargs = job_kwargs
        self.deadline = deadline
        self.max_cost_usd = max_cost_usd

    def execute(self, context: Context) -> dict[str, Any]:
        """Build the job and `batchor.steps.start` it, then wait and collect."""
        self.check_rendered()
        run_id = self.run_id or default_run_id(context)
        self._live_run_id = run_id
        summary = start_run(
            self,
            self.job,
            self.job_kwargs,
            run_id,
            deadline=self.deadline,
            max_cost_usd=self.max_cost_usd,
        ).summary
        return self._finish(run_id, summary)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed from the trigger: take one step, then collect or defer again."""
        run_id = str(event["run_id"])
        if event.get("reason") == "error":
            self.log.warning("trigger could not read run %s: %s", run_id, event.get("message"))
        return self._finish(run_id, self.step(run_id))

    def _finish(self, run_id: str, summary: RunSummary) -> dict[str, Any]:
        if not summary.is_terminal:
            # A run paused with nothing in flight fails in the wait, at its first step.
            if self.deferrable and not summary.is_stalled:
                self.defer(trigger=self.trigger_for(run_id), method_name="execute_complete")
            self.wait_blocking(run_id)
        return collect_results(
            self.get_hook(),
            run_id,
            str(self.destination),
            fail_on_failed_items=self.fail_on_failed_items,
        )

"""Which failures a task retries: the core's permanent errors never, anything else yes."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun

from batchor import PERMANENT_ERRORS as CORE_PERMANENT_ERRORS
from batchor import ProviderQuotaError, RunStateError, WaitTimeout

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    *CORE_PERMANENT_ERRORS,
    RunStateError,
    ProviderQuotaError,
    WaitTimeout,
)
"""Errors a retry cannot fix: the core's `batchor.PERMANENT_ERRORS` (bad settings or input, a
run key taken by another job, a run missing from the store, refused credentials), and here
also a run in the wrong state, an account out of quota (the run pauses until someone resumes
it) and a wait that reached its own timeout."""


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the task after ``exc`` is pointless (see `PERMANENT_ERRORS`)."""
    return isinstance(exc, PERMANENT_ERRORS)


def retry_unless_permanent(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """A Prefect ``retry_condition_fn``: retry transient failures (`batchor.ProviderError`,
    network and database errors...), never the core's permanent ones."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # the stored result could not be read: retry
            exc = raised
    return not (isinstance(exc, BaseException) and is_permanent(exc))

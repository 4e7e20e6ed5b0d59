"""Which failures a task retries: the core's rule, `batchor.is_permanent`, decides."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun

from batchor.errors import is_permanent


def retry_unless_permanent(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """A Prefect ``retry_condition_fn``: retry what `batchor.is_permanent` says a retry can fix
    (a run not ended yet, `batchor.ProviderError`, network and database errors...), never the
    permanent errors (bad settings or input, a run key taken by another job, refused
    credentials, a run that only a person can resume)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # the stored result could not be read: retry
            exc = raised
    return not (isinstance(exc, BaseException) and is_permanent(exc))

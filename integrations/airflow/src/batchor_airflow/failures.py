"""How batchor's errors become Airflow outcomes: permanent ones fail the task without retry,
the rest propagate so Airflow's retries apply."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from batchor import RunSummary, is_permanent


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


def check_not_stuck(summary: RunSummary) -> None:
    """Fail without retry when the run is paused and nothing is left at the provider: only
    ``batchor resume RUN_ID`` (or ``Run.resume()``) can continue it."""
    if summary.is_stalled:
        raise AirflowFailException(
            f"run {summary.run_id!r} is paused ({summary.pause_reason}) with nothing in "
            f"flight; run `batchor resume {summary.run_id}` and clear this task"
        )

"""Mapping of batchor's errors onto Dagster's retry semantics: permanent errors fail the step
without retry, transient ones propagate so a `RetryPolicy` can retry them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure

from batchor import PERMANENT_ERRORS, JobMismatchError, RunStateError


@contextmanager
def dagster_failures(
    hint: str = "", permanent: tuple[type[Exception], ...] = PERMANENT_ERRORS
) -> Iterator[None]:
    """Turn a ``permanent`` batchor error raised inside into ``Failure(allow_retries=False)``
    (its message, plus ``hint`` unless it is about the input, the settings or the store); let
    anything else (`ProviderError`, network errors) through unchanged, to be retried by the
    asset's `RetryPolicy`."""
    try:
        yield
    except permanent as exc:
        description = f"{type(exc).__name__}: {exc}"
        if hint and isinstance(exc, JobMismatchError | RunStateError):
            description = f"{description}. {hint}"
        raise Failure(description=description, allow_retries=False) from exc


def paused_failure(run_id: str, reason: str | None) -> Failure:
    """The failure for a run that is paused with nothing left at the provider: waiting longer
    cannot finish it, a person must resume it."""
    return Failure(
        description=(
            f"batchor run {run_id!r} is paused ({reason or 'no reason given'}) and has nothing "
            f"in flight; resume it (`batchor resume {run_id}`) and materialise again"
        ),
        allow_retries=False,
    )

"""Mapping of batchor's errors onto Dagster's retry semantics, by the core's one rule
(`batchor.errors.is_permanent`): permanent errors fail the step without retry; a run not yet
ended fails retryably; anything else propagates so a `RetryPolicy` can retry it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure

from batchor import BatchorError, JobMismatchError, RunNotReady, RunStateError, is_permanent


@contextmanager
def dagster_failures(hint: str = "") -> Iterator[None]:
    """Turn a permanent batchor error raised inside into ``Failure(allow_retries=False)``
    (its message, plus ``hint`` when the run cannot take the job or is stuck), and a
    `RunNotReady` (a wait timed out; the run goes on) into a retryable `Failure`; let
    anything else (`ProviderError`, network errors) through unchanged, to be retried by the
    asset's `RetryPolicy`."""
    try:
        yield
    except BatchorError as exc:
        permanent = is_permanent(exc)
        if not permanent and not isinstance(exc, RunNotReady):
            raise
        description = f"{type(exc).__name__}: {exc}"
        if not permanent:
            description += "; it goes on, and materialising again attaches to it"
        elif hint and isinstance(exc, JobMismatchError | RunStateError):
            description += f". {hint}"
        raise Failure(description=description, allow_retries=not permanent) from exc

"""The exceptions batchor raises.

::

    BatchorError
    ├── ConfigurationError        a setting or argument is invalid (names it)
    ├── SourceError               an input source cannot be read as items (names file and row)
    │   └── DuplicateItemError    two items share an item_id
    ├── JobMismatchError          an existing run_id was started with a different job
    ├── StoreUnavailableError     the store's server could not be reached (also a ConnectionError)
    ├── RunNotFoundError          no run with that id in the store
    ├── RunNotReady               the run has not ended yet: asking again later can succeed
    │   └── WaitTimeout           ``Run.wait(timeout=...)`` elapsed (also a ``TimeoutError``)
    ├── RunStateError             the run is in a state no retry changes (cancelled, paused
    │                             with nothing in flight): a person must act first
    ├── ProviderError             the provider API failed in a way retries did not fix
    │   ├── ProviderAuthError     the provider refused the credentials
    │   └── ProviderQuotaError    the account is out of quota (the run pauses)

`is_permanent` is the one rule that decides which of them a retry can fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchor.results import RunSummary


class BatchorError(Exception):
    """Base class of every error batchor raises on purpose."""


class ConfigurationError(BatchorError, ValueError):
    """A setting or argument is invalid; the message names it."""


class SourceError(BatchorError, ValueError):
    """An input source cannot be turned into items; the message names the file and row."""


class DuplicateItemError(SourceError):
    """Two items of one run share an ``item_id``."""

    def __init__(self, message: str, *, item_id: str | None = None) -> None:
        super().__init__(message)
        self.item_id = item_id
        """The repeated id, when known."""


class JobMismatchError(BatchorError):
    """A run_id that exists was started with a different job definition."""


class StoreUnavailableError(BatchorError, ConnectionError):
    """The store's database server could not be reached (down, unreachable, or silent past
    the connect timeout). Trying again later can succeed."""


class RunNotFoundError(BatchorError, LookupError):
    """The store holds no run with the requested id."""


class RunStateError(BatchorError):
    """The run's state forbids the requested operation, and waiting will not change it (the
    run is cancelled, or paused with nothing in flight): "never", until a person acts."""


class RunNotReady(BatchorError):
    """The run has not ended yet, so the operation (collecting its results) must wait:
    "not yet". Calling again once the run has ended succeeds."""


class ProviderError(BatchorError):
    """The provider's API failed in a way that retrying did not fix."""


class TransientProviderError(ProviderError):
    """A provider call failed in a way that may succeed later (timeout, 5xx, 429, a
    connection lost, a download cut half-way). The engine postpones the step and tries
    again; `is_permanent` says False."""


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (missing or invalid API key)."""


class ProviderQuotaError(ProviderError):
    """The provider refused work because the account is out of quota or credit
    (``insufficient_quota``). The run pauses with this reason; ``Run.resume()`` continues it
    once the account is topped up."""


class WaitTimeout(RunNotReady, TimeoutError):
    """``Run.wait`` reached its timeout before the run became terminal (the run goes on)."""

    def __init__(self, message: str, summary: RunSummary) -> None:
        super().__init__(message)
        self.summary = summary
        """The run's summary when the wait gave up."""


PERMANENT_ERRORS: tuple[type[BatchorError], ...] = (
    ConfigurationError,
    SourceError,
    JobMismatchError,
    RunNotFoundError,
    RunStateError,
    ProviderAuthError,
    ProviderQuotaError,
)
"""The errors that calling again cannot fix: the settings, the input, the run id or the key
must change, or a person must resume the run (a cancelled run, a run paused with nothing in
flight, an account out of quota). See `is_permanent`."""


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` is pointless.

    The one rule every orchestrator integration applies: `PERMANENT_ERRORS` fail without
    retry; everything else (`RunNotReady` and `WaitTimeout`, `ProviderError`, network and
    database errors) may succeed when tried again, which the idempotent `batchor.steps` make
    safe.
    """
    return isinstance(exc, PERMANENT_ERRORS)

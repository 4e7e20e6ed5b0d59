"""The small, JSON-serialisable handles the steps hand to orchestrators: a started run and a
collected run. They live apart from `batchor.steps` so that `Run` can return them without
importing the steps, which sit above it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from batchor.results import RunSummary


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A started run, as an orchestrator keeps it between steps.

    Attributes:
        run_id: The run's id.
        fingerprint: The job definition's fingerprint; the same job gives the same value.
    """

    run_id: str
    fingerprint: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunHandle:
        """The handle `to_dict` described."""
        return cls(run_id=str(data["run_id"]), fingerprint=str(data["fingerprint"]))


@dataclass(frozen=True, slots=True)
class CollectResult:
    """A terminal run's results, written to their destination.

    Attributes:
        run_id: The run's id.
        uri: Where the results file is.
        results: Results written (one per item).
        counts: Items by final status (``completed``, ``failed``, ``cancelled``).
        input_tokens: Tokens billed for prompts.
        output_tokens: Tokens billed for replies.
        cost_usd: Estimated cost (``None`` when the price table does not know the model).
        run_status: The run's final status.
    """

    run_id: str
    uri: str
    results: int
    counts: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    run_status: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectResult:
        """The result `to_dict` described."""
        return cls(**data)


@dataclass(frozen=True, slots=True)
class StartedRun:
    """What `batchor.steps.start` hands back: the handle to keep between steps, and the run's
    summary right after the start, to log or report (it is not meant to be persisted).

    Attributes:
        handle: The run's handle.
        summary: The run's summary after the start.
    """

    handle: RunHandle
    summary: RunSummary

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.handle.run_id

"""The table artifact a flow publishes when a run is collected: counts, tokens and cost."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from prefect.artifacts import create_table_artifact

from batchor import steps


def artifact_key(run_id: str) -> str:
    """The artifact key of a run's summary: ``batchor-`` and the run id in lowercase letters,
    digits and dashes (Prefect's rule for keys)."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    return f"batchor-{slug}"[:200].rstrip("-")


def summary_rows(result: steps.CollectResult) -> list[dict[str, Any]]:
    """The summary table: one ``{"metric", "value"}`` row per figure."""
    rows: list[dict[str, Any]] = [
        {"metric": "run_id", "value": result.run_id},
        {"metric": "status", "value": result.run_status},
        {"metric": "results", "value": result.results},
    ]
    rows += [{"metric": status, "value": n} for status, n in sorted(result.counts.items())]
    rows += [
        {"metric": "input_tokens", "value": result.input_tokens},
        {"metric": "output_tokens", "value": result.output_tokens},
        {
            "metric": "cost_usd",
            "value": None if result.cost_usd is None else round(result.cost_usd, 6),
        },
        {"metric": "results_uri", "value": result.uri},
    ]
    return rows


def publish_summary(result: steps.CollectResult) -> UUID:
    """Create the run's summary table artifact (key `artifact_key`) in the current flow or
    task run; returns its id. Blocking, also when called from async code."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
    created = create_table_artifact(
        table=summary_rows(result),
        key=artifact_key(result.run_id),
        description=f"batchor run `{result.run_id}`: {result.run_status}, {counts}",
        _sync=True,  # type: ignore[call-arg]  # also from async code (Prefect's async_dispatch)
    )
    assert isinstance(created, UUID)
    return created

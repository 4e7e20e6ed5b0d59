"""The small, JSON-serialisable handles the operators push to XCom, and the default run id."""

from __future__ import annotations

from typing import Any

from batchor import RunSummary, run_id_from


def summary_handle(summary: RunSummary) -> dict[str, Any]:
    """``run_id``, ``status``, ``total`` and item ``counts`` by status of a run."""
    return {
        "run_id": summary.run_id,
        "status": summary.status.value,
        "total": summary.total,
        "counts": {status.value: n for status, n in summary.items.items()},
    }


def default_run_id(context: Any) -> str:
    """The run id of a task instance: dag_id, the DAG run's id, task_id and, for a mapped
    task, its map_index (see `batchor.run_id_from`). Retries, clears and re-runs of the same
    task instance get the same id; each mapped task instance gets its own."""
    ti = context["ti"]
    parts: list[object] = [ti.dag_id, context["dag_run"].run_id, ti.task_id]
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        parts.append(map_index)
    return run_id_from(*parts)

"""Reading back what Prefect recorded: task runs and artifacts of a flow run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.states import State

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prefect" / "classify_reviews.py"


def load_example() -> ModuleType:
    """The example module, imported from its file (once per session)."""
    name = "classify_reviews"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def flow_run_id(state: State[Any]) -> UUID:
    """The flow run a returned state belongs to."""
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def task_runs(flow_run: UUID) -> dict[str, tuple[str, int]]:
    """``{task run name: (state name, run count)}`` of a flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run]))
        )
    return {r.name: (r.state.name if r.state else "", r.run_count) for r in runs}


def table_artifact(key: str, flow_run: UUID) -> list[dict[str, Any]]:
    """The rows of the table artifact ``key`` created by ``flow_run``."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]),
            )
        )
    assert len(found) == 1, found
    assert found[0].type == "table"
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows

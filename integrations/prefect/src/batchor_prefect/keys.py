"""Run keys and cache keys. The run key names the batchor run; the cache keys make the start
and collect tasks' Prefect caches follow it (and the store holding it), never the flow run."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext

from batchor import run_id_from
from batchor.errors import ConfigurationError
from batchor.runner import DEFAULT_STORE
from batchor.steps import results_location
from batchor_prefect.config import BatchorConfig, redact_url


def flow_run_key() -> str:
    """A run key derived from the current flow run, stable across its retries.

    For a top-level flow run: the flow's name and the flow run's id (Prefect keeps the id when
    the flow run is retried). For a subflow: the flow's name, the root flow run's id and the
    key of the parent's task run for this call, which stay the same when the parent re-runs.

    Raises:
        ConfigurationError: Called outside a flow run.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise ConfigurationError("no flow run to derive a run key from: pass run_key")
    flow_run = context.flow_run
    name = context.flow.name if context.flow is not None else flow_run.name
    if flow_run.parent_task_run_id is None:
        return run_id_from(name, flow_run.id)
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run as runtime_flow_run

    with get_client(sync_client=True) as client:
        parent = client.read_task_run(flow_run.parent_task_run_id)
    return run_id_from(name, runtime_flow_run.root_flow_run_id, parent.task_key, parent.dynamic_key)


def store_identity(config: BatchorConfig | None) -> str:
    """The store a runner built from ``config`` opens, as a secret-free string: the URL with
    any password removed and a relative SQLite path made absolute."""
    url = (config.store if config else None) or os.environ.get("BATCHOR_STORE") or DEFAULT_STORE
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        url = prefix + os.path.abspath(url[len(prefix) :])
    return redact_url(url)


def _digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _config_of(parameters: dict[str, Any]) -> BatchorConfig | None:
    config = parameters.get("config")
    if isinstance(config, str):
        from batchor_prefect.config import resolve_config

        return resolve_config(config)
    return config if isinstance(config, BatchorConfig) else None


def start_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The start task's cache key: its run key and store (never the flow run, the job or the
    key). A second flow run with the same run key gets the cached handle."""
    config = _config_of(parameters)
    return "batchor-start-" + _digest(str(parameters["run_key"]), store_identity(config))


def collect_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The collect task's cache key: its run, store and destination."""
    config = _config_of(parameters)
    return "batchor-collect-" + _digest(
        str(parameters["run_id"]),
        store_identity(config),
        results_location(parameters["destination"]),
    )

"""How a job is recorded with its run: the config stored (never the API key), the codec it
implies, the fingerprint that says whether a later job is the same one, and what changed
when it is not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from batchor.jobs import BatchJob
from batchor.providers.base import RequestCodec
from batchor.sources.base import CheckpointedItemSource
from batchor.structured import model_path, schema_name, strict_json_schema

# Settings that may change between processes without making it a different job.
_NOT_FINGERPRINTED = frozenset(
    {
        "base_url",
        "api_version",
        "price_model",
        "schema_model",
        "enqueued_token_limit",
        "quota_scope",
        "keep_raw_outputs",
        "batch_timeout",
        "finish_sync",
    }
)


def job_config(job: BatchJob) -> dict[str, Any]:
    """The job's definition as stored with the run (never the API key)."""
    provider = job.provider_config
    model = job.structured_output
    return {
        **provider.record(),
        "schema": strict_json_schema(model) if model is not None else None,
        "schema_name": schema_name(model) if model is not None else None,
        "schema_model": model_path(model) if model is not None else None,
        "max_attempts": job.retry_policy.max_attempts,
        "max_requests": job.limits.max_requests or provider.limits.max_requests,
        "max_bytes": job.limits.max_bytes,
        "keep_raw_outputs": job.artifact_policy.keep_raw_outputs,
        "batch_timeout": (
            job.limits.batch_timeout.total_seconds() if job.limits.batch_timeout else None
        ),
        "finish_sync": None if job.finish_sync is None else job.finish_sync.record(),
        "source": _source_record(job.items),
    }


def _source_record(items: object) -> dict[str, str] | None:
    """A checkpointed source's identity and content fingerprint (None for a plain iterable,
    which is resumable only once fully ingested)."""
    if not isinstance(items, CheckpointedItemSource):
        return None
    return {"identity": items.identity, "fingerprint": items.fingerprint()}


def job_codec(job: BatchJob) -> RequestCodec:
    """The wire format of a job's requests (model, endpoint, params, schema)."""
    model = job.structured_output
    if model is None:
        return job.provider_config.codec(None, "output")
    return job.provider_config.codec(strict_json_schema(model), schema_name(model))


def _fingerprinted(value: Any) -> Any:
    """The part of a config value that identifies the job (a source by content, not path)."""
    if isinstance(value, dict) and "fingerprint" in value:
        return value["fingerprint"]
    return value


def fingerprint_of(config: Mapping[str, Any]) -> str:
    """The fingerprint of a job's stored config: what makes it the same job (a source by
    content, not path; settings that may change between processes left out)."""
    material = {k: _fingerprinted(v) for k, v in config.items() if k not in _NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def mismatch_message(run_id: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Why a job attached to run ``run_id`` is not the job it was started with, in one line
    naming what changed."""
    changed = sorted(
        k
        for k in set(old) | set(new)
        if k not in _NOT_FINGERPRINTED and _fingerprinted(old.get(k)) != _fingerprinted(new.get(k))
    )
    was_on, now_on = old.get("provider") or "openai", new.get("provider") or "openai"
    if was_on != now_on:
        return (
            f"run {run_id!r} was started on provider {was_on}, and this job is for {now_on}: "
            f"attach with a {was_on} config, or use a new run_id for the {now_on} job"
        )
    if changed == ["source"]:
        was = (old.get("source") or {}).get("identity", "a plain iterable")
        return (
            f"run {run_id!r} was started from a different input: the content or order of "
            f"{was} has changed since; resume with the same input or use a new run_id"
        )
    return (
        f"run {run_id!r} exists with a different job definition ({', '.join(changed)} "
        "changed); use a new run_id for a different job"
    )

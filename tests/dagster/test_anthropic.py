"""A `batchor_asset` materialises on Anthropic's Message Batches API (its emulator) end to end,
with real Dagster: nothing in the asset, the resource or the metadata is OpenAI-specific
(token usage is reported under ``anthropic.<model>.*``).

The resource gives Anthropic's key and base URL (``api_keys`` / ``base_urls`` by provider
name, the key through ``EnvVar``) and they reach every step of the run, though the job sets
neither and the store never holds a key; its OpenAI key never reaches Anthropic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchor_dagster import BatchorResource, batchor_asset
from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    EnvVar,
    materialize,
)

from batchor import (
    AnthropicProviderConfig,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
)
from batchor.testing import AnthropicBatchEmulator, OpenAIBatchEmulator

from .conftest import DAYS, Label, items_for, prompt

pytest.importorskip("anthropic")

SECRET = "sk-ant-dagster-test-9a41c7e2"
"""The only key the Anthropic emulator accepts."""
OPENAI_SECRET = "sk-dagster-openai-5e03b8d6"
"""The resource's (OpenAI) key: it must never reach Anthropic."""
MODEL = "claude-haiku-4-5"


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicBatchEmulator]:
    """An Anthropic emulator accepting only `SECRET`."""
    with AnthropicBatchEmulator(api_key=SECRET, phase_seconds=0.05) as emu:
        yield emu


def _metadata(instance: DagsterInstance, run_id: str) -> dict[str, Any]:
    [event] = [
        e
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None
        and e.dagster_event.event_type is DagsterEventType.ASSET_MATERIALIZATION
    ]
    mat = event.dagster_event.event_specific_data.materialization  # type: ignore[union-attr]
    return {k: v.value for k, v in mat.metadata.items()}


def test_a_partitioned_asset_materialises_an_anthropic_job(
    anthropic_emulator: AnthropicBatchEmulator,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = anthropic_emulator
    monkeypatch.setenv("CLAUDE_KEY_FOR_TEST", SECRET)  # read by Dagster through EnvVar
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def claude_job(context: AssetExecutionContext, **_: Any) -> BatchJob:
        """The partition's day on Claude, in batches of 5 requests, with a typed reply."""
        return BatchJob(
            items=items_for(context.partition_key),
            build_prompt=prompt,
            provider_config=AnthropicProviderConfig(model=MODEL, max_tokens=256),
            structured_output=Label,
            limits=BatchLimits(max_requests=5),
        )

    labels = batchor_asset(
        name="claude_labels",
        job=claude_job,
        destination=str(tmp_path / "out" / "{partition_key}.jsonl"),
        partitions_def=DAYS,
        poll_interval=0.2,
        kinds={"anthropic"},
    )
    assert labels.specs_by_key[labels.key].kinds == {"batchor", "anthropic"}
    store, artifacts = f"sqlite:///{tmp_path}/state/batchor.db", str(tmp_path / "artifacts")
    with OpenAIBatchEmulator(api_key=OPENAI_SECRET) as openai_emu:
        resource = BatchorResource(
            store=store,
            artifacts=artifacts,
            openai_api_key=OPENAI_SECRET,
            openai_base_url=openai_emu.base_url,
            api_keys={"anthropic": EnvVar("CLAUDE_KEY_FOR_TEST")},
            base_urls={"anthropic": emu.base_url},
        )
        assert SECRET not in repr(resource)
        outcome = materialize(
            [labels], partition_key="2026-11-23", resources={"batchor": resource}, instance=instance
        )
        assert openai_emu.stats.total_calls == 0  # nothing went to OpenAI

    assert outcome.success
    meta = _metadata(instance, outcome.run_id)
    run_id = meta["batchor/run_id"]
    assert meta["batchor/run_status"] == "completed"
    assert meta["batchor/items"] == {"completed": 12, "failed": 0, "cancelled": 0}
    assert meta["dagster/row_count"] == 12
    assert meta["batchor/cost_usd"] > 0
    # Tokens under the run's provider, never counted as OpenAI's.
    tokens = {k: v for k, v in meta.items() if k.endswith("_tokens")}
    assert set(tokens) == {
        f"anthropic.{MODEL}.{k}_tokens" for k in ("prompt", "completion", "total")
    }
    assert tokens[f"anthropic.{MODEL}.prompt_tokens"] > 0
    assert (
        tokens[f"anthropic.{MODEL}.total_tokens"]
        == tokens[f"anthropic.{MODEL}.prompt_tokens"]
        + tokens[f"anthropic.{MODEL}.completion_tokens"]
    )
    checks = {c.check_name: c for c in outcome.get_asset_check_evaluations()}
    assert set(checks) == {"batchor_failure_rate", "batchor_limits"}
    assert checks["batchor_limits"].passed  # no deadline, no cap: nothing stopped the run
    check = checks["batchor_failure_rate"]
    assert check.passed
    out = tmp_path / "out" / "2026-11-23.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(f"2026-11-23-{i}" for i in range(12))
    assert all(Label.model_validate(r["output"]) for r in rows)

    with BatchRunner(store, artifacts) as runner:
        run = runner.get_run(run_id, model=Label)
        results = list(run.results())
        held = [b.provider_batch_id for b in run.batches()]
    assert {r.status for r in results} == {ItemStatus.COMPLETED}
    assert all(isinstance(r.output, Label) for r in results)
    # Exactly one Message Batch per batch row (12 items, 5 a batch), each held once.
    assert len(held) == 3
    assert sorted(held) == sorted(b["id"] for b in emu.batches())
    assert emu.stats.batches_created == 3
    # The key reached Anthropic (the emulator refuses any other) and nowhere else.
    assert SECRET not in "".join(str(e) for e in instance.all_logs(outcome.run_id))
    assert not any(
        SECRET in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file()
    )


def test_resource_keys_name_known_providers_once() -> None:
    from batchor import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown provider 'claude'"):
        BatchorResource(store="memory://", api_keys={"claude": "k"}).runner()
    with pytest.raises(ConfigurationError, match="OpenAI credentials given twice"):
        BatchorResource(store="memory://", openai_api_key="a", api_keys={"openai": "b"}).runner()
    shown = repr(BatchorResource(api_keys={"gemini": "AIza-hidden-3"}))
    assert "AIza-hidden-3" not in shown
    assert "gemini" in shown

"""The ready flow runs a job on Anthropic's Message Batches API (its emulator) end to end, on
a real Prefect server: nothing in the flow, its tasks or the block is OpenAI-specific.

A saved block gives Anthropic's key and base URL (``api_keys`` / ``base_urls`` by provider
name) and each task, loading the block by name, reaches the API with them: the job sets
neither and the store never holds a key. The block's OpenAI key never reaches Anthropic, and
the Prefect server shows no key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from batchor_prefect import BatchorConfig, run_batch_job
from prefect.client.orchestration import get_client

from batchor import (
    AnthropicProviderConfig,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    steps,
)
from batchor.testing import AnthropicBatchEmulator, OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt
from .helpers import flow_run_id, task_runs

pytest.importorskip("anthropic")

SECRET = "sk-ant-prefect-test-4b8e0d93"
"""The only key the Anthropic emulator accepts."""
OPENAI_SECRET = "sk-prefect-openai-71c2f5a0"
"""The block's (OpenAI) key: it must never reach Anthropic."""


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicBatchEmulator]:
    """An Anthropic emulator accepting only `SECRET`."""
    with AnthropicBatchEmulator(api_key=SECRET, phase_seconds=0.05) as emu:
        yield emu


def test_the_ready_flow_completes_an_anthropic_job(
    anthropic_emulator: AnthropicBatchEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = anthropic_emulator
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    job = BatchJob(
        items=make_items(12),
        build_prompt=prompt,
        provider_config=AnthropicProviderConfig(model="claude-haiku-4-5", max_tokens=256),
        structured_output=Sentiment,
        limits=BatchLimits(max_requests=5),
    )
    destination = tmp_path / "out" / "labels.jsonl"
    key = "claude-2026-11-30"
    with OpenAIBatchEmulator(api_key=OPENAI_SECRET) as openai_emu:
        config = BatchorConfig(
            store=f"sqlite:///{tmp_path}/store/batchor.db",
            artifacts=str(tmp_path / "artifacts"),
            openai_api_key=OPENAI_SECRET,
            openai_base_url=openai_emu.base_url,
            api_keys={"anthropic": SECRET},
            base_urls={"anthropic": emu.base_url},
        )
        block = f"claude-{uuid.uuid4().hex[:8]}"
        config.save(block)
        state = run_batch_job(
            job=job, destination=destination, run_key=key, config=block, return_state=True
        )
        assert openai_emu.stats.total_calls == 0  # nothing went to OpenAI

    assert state.is_completed(), state
    result = state.result()
    assert isinstance(result, steps.CollectResult)
    assert result.run_id == key
    assert result.run_status == "completed"
    assert result.counts == {"completed": 12, "failed": 0, "cancelled": 0}
    assert result.input_tokens > 0
    assert result.cost_usd is not None
    assert task_runs(flow_run_id(state)) == {
        f"start-{key}": ("Completed", 1),
        f"wait-{key}": ("Completed", 1),
        f"collect-{key}": ("Completed", 1),
    }
    rows = [json.loads(line) for line in destination.read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(f"item-{i}" for i in range(12))
    assert all(Sentiment.model_validate(r["output"]) for r in rows)
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(flow_run_id(state)).parameters
    assert parameters["job"] == "<BatchJob model=claude-haiku-4-5 endpoint=/v1/messages>"
    with get_client(sync_client=True) as client:
        shown = client.read_block_document_by_name(block, "batchor-config", include_secrets=False)
    assert shown.data["api_keys"] == {"anthropic": "********"}
    assert SECRET not in json.dumps(shown.data)
    assert config.describe()["api_keys"] == "anthropic"
    assert SECRET not in repr(config)

    with BatchRunner(config.store, config.artifacts) as runner:
        run = runner.get_run(key, model=Sentiment)
        results = list(run.results())
        held = [b.provider_batch_id for b in run.batches()]
    assert {r.status for r in results} == {ItemStatus.COMPLETED}
    assert all(isinstance(r.output, Sentiment) for r in results)
    # Exactly one Message Batch per batch row (12 items, 5 a batch), each held once.
    assert len(held) == 3
    assert sorted(held) == sorted(b["id"] for b in emu.batches())
    assert emu.stats.batches_created == 3

"""A batchor DAG runs on Anthropic's Message Batches API (its emulator) end to end, in-process
with ``dag.test()``: nothing in the operators, the trigger or the hook is OpenAI-specific.

The DAG's connection is in the ``openai`` format with ``provider: anthropic`` in its extras:
its key and host reach every step of the run (each after the first rehydrates the run from the
store, which never holds a key), with no key in the job or the environment. The default
``openai_default`` connection holds an OpenAI key that must never reach Anthropic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from batchor import (
    AnthropicProviderConfig,
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    PromptParts,
)
from batchor.testing import AnthropicBatchEmulator, OpenAIBatchEmulator
from tests.airflow.conftest import DAGS
from tests.airflow.helpers import jsonl_ids, load_dag, task_states, xcom

pytest.importorskip("airflow")
pytest.importorskip("anthropic")

SECRET = "sk-ant-airflow-test-6d2b9e41"
"""The only key the Anthropic emulator accepts."""
OPENAI_SECRET = "sk-openai-airflow-test-0c7f3a15"
"""The connection's (OpenAI) key: it must never reach Anthropic."""
DAG_ID = "batchor_test_anthropic"
# ``dag.test()`` runs the DAGs of the DAGs folder only: this one is written there for the test.
DAG_FILE = f"""
import os
from datetime import datetime

from airflow.sdk import DAG
from batchor_airflow import BatchorRunOperator

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    BatchorRunOperator(
        task_id="classify",
        conn_id="claude",
        job="tests.airflow.test_anthropic:anthropic_job",
        destination=os.environ.get("BATCHOR_TEST_RESULTS", "results") + "/tickets.jsonl",
        deferrable=True,
        poll_interval=0.3,
    )
"""


class Ticket(BaseModel):
    """The structured output of the test job."""

    category: Literal["billing", "bug", "other"]
    urgent: bool


def anthropic_job(n: int = 12, per_batch: int = 4) -> BatchJob:
    """``n`` tickets, ``per_batch`` per Message Batch, on Claude with a typed reply; no key
    and no base URL: the connection gives both."""
    return BatchJob(
        items=[BatchItem(item_id=f"t-{i}", payload={"text": f"ticket {i}"}) for i in range(n)],
        build_prompt=lambda item: PromptParts(
            prompt=item.payload["text"], system="Classify the support ticket."
        ),
        provider_config=AnthropicProviderConfig(
            model="claude-haiku-4-5",
            max_tokens=256,
        ),
        structured_output=Ticket,
        limits=BatchLimits(max_requests=per_batch),
    )


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicBatchEmulator]:
    """An Anthropic emulator accepting only `SECRET`, its batches in progress a moment."""
    with AnthropicBatchEmulator(api_key=SECRET, phase_seconds=0.3) as emu:
        yield emu


@pytest.fixture
def anthropic_dag(airflow_db: Path) -> Iterator[Path]:
    """The test DAG in the DAGs folder while the test runs; yields the folder."""
    path = DAGS / "batchor_test_anthropic.py"
    path.write_text(DAG_FILE)
    yield airflow_db
    path.unlink()


@pytest.fixture
def trigger_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event `BatchorRunTrigger` fires (a spy: the trigger still runs as it is)."""
    from batchor_airflow.triggers import BatchorRunTrigger

    events: list[dict[str, Any]] = []
    original = BatchorRunTrigger.run

    async def spy(self: BatchorRunTrigger) -> AsyncIterator[Any]:
        async for event in original(self):
            events.append(event.payload)
            yield event

    monkeypatch.setattr(BatchorRunTrigger, "run", spy)
    return events


def test_a_deferrable_run_operator_completes_an_anthropic_job(
    anthropic_dag: Path,
    anthropic_emulator: AnthropicBatchEmulator,
    trigger_events: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = anthropic_emulator
    store, artifacts = f"sqlite:///{tmp_path}/batchor.db", str(tmp_path / "artifacts")
    with OpenAIBatchEmulator(api_key=OPENAI_SECRET) as openai_emu:
        where = {"batchor_store": store, "batchor_artifacts": artifacts}
        # The default connection names the store and an OpenAI key; the DAG's names Claude's.
        default = {
            "conn_type": "openai",
            "host": openai_emu.base_url,
            "password": OPENAI_SECRET,
            "extra": where,
        }
        claude = {
            "conn_type": "openai",
            "host": emu.base_url,
            "password": SECRET,
            "extra": {**where, "provider": "anthropic"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(default))
        monkeypatch.setenv("AIRFLOW_CONN_CLAUDE", json.dumps(claude))
        monkeypatch.setenv("BATCHOR_TEST_RESULTS", str(tmp_path / "results"))
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            monkeypatch.delenv(name, raising=False)

        dag_run = load_dag(anthropic_dag, DAG_ID).test()

        assert openai_emu.stats.total_calls == 0  # nothing went to OpenAI

    assert task_states(dag_run) == {("classify", -1): ("success", 1)}
    handle = xcom(dag_run, "classify")
    assert handle["run_status"] == "completed"
    assert handle["counts"] == {"completed": 12, "failed": 0, "cancelled": 0}
    assert handle["input_tokens"] > 0
    assert handle["cost_usd"] is not None
    assert jsonl_ids(handle["uri"]) == sorted(f"t-{i}" for i in range(12))
    rows = [json.loads(line) for line in Path(handle["uri"]).read_text().splitlines()]
    assert all(Ticket.model_validate(r["output"]) for r in rows)

    with BatchRunner(store, artifacts) as runner:
        run = runner.get_run(handle["run_id"], model=Ticket)
        results = list(run.results())
        held = [b.provider_batch_id for b in run.batches()]
    assert {r.status for r in results} == {ItemStatus.COMPLETED}
    assert all(isinstance(r.output, Ticket) for r in results)
    # Exactly one Message Batch per batch row (12 tickets, 4 a batch), each held once.
    assert len(held) == 3
    assert sorted(held) == sorted(b["id"] for b in emu.batches())
    assert emu.stats.batches_created == 3
    # The task deferred to the trigger and resumed on its events.
    assert trigger_events
    assert {e["run_id"] for e in trigger_events} == {handle["run_id"]}


def test_a_connection_says_which_provider_its_key_is_for() -> None:
    from airflow.sdk import Connection
    from batchor_airflow.config import resolve_config

    from batchor import ConfigurationError

    def conn(conn_type: str, extra: dict[str, Any] | None = None) -> Any:
        return Connection(
            conn_id="c", conn_type=conn_type, password="sk-hidden-7", extra=json.dumps(extra or {})
        )

    assert resolve_config(conn("openai")).provider == "openai"
    assert resolve_config(conn("openai", {"provider": "gemini"})).provider == "gemini"
    assert resolve_config(conn("anthropic")).provider == "anthropic"  # anthropic://:k@
    assert resolve_config(conn("http")).provider == "openai"
    assert resolve_config(None).provider == "openai"
    with pytest.raises(ConfigurationError) as info:
        resolve_config(conn("openai", {"provider": "claude"}))
    assert str(info.value) == (
        "connection 'c': extra 'provider' is 'claude'; the providers are openai, azure, "
        "anthropic, gemini"
    )
    assert "sk-hidden-7" not in repr(resolve_config(conn("openai")))

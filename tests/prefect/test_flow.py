"""The ready flow on a real Prefect server against the emulator: the example completes, a
second flow run with the same run key reuses everything, the summary artifact is right, and
no secret reaches Prefect's database, its results or batchor's store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest
from batchor_prefect import BatchJobFlow, BatchorConfig, artifact_key, run_batch_job
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flows import load_flow_from_entrypoint
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

from batchor import BatchJob, BatchRunner, OpenAIProviderConfig, PromptParts, steps
from batchor.testing import OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt
from .helpers import EXAMPLE, flow_run_id, load_example, table_artifact, task_runs


def _config(tmp_path: Path, emu: OpenAIBatchEmulator) -> BatchorConfig:
    return BatchorConfig(
        store=f"sqlite:///{tmp_path}/store/batchor.db",
        artifacts=str(tmp_path / "artifacts"),
        openai_base_url=emu.base_url,
        openai_api_key=emu.api_key,
    )


def test_example_flow_collects_every_result_and_a_second_flow_run_reuses_the_run(
    tmp_path: Path, openai_emulator: OpenAIBatchEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    example = load_example()
    config = _config(tmp_path, openai_emulator)
    destination = tmp_path / "out" / "reviews.jsonl"
    key = "reviews-2026-11-30"

    first = run_batch_job(
        job=example.make_job, destination=destination, run_key=key, config=config,
        return_state=True,
    )  # fmt: skip
    assert first.is_completed(), first
    result = first.result()
    assert isinstance(result, steps.CollectResult)
    assert result.run_id == key
    assert result.uri == str(destination.resolve())
    assert result.counts == {"completed": 20, "failed": 0, "cancelled": 0}
    assert result.results == 20
    assert result.input_tokens > 0
    assert result.cost_usd is not None

    lines = [json.loads(line) for line in destination.read_text().splitlines()]
    expected = [json.loads(line)["id"] for line in example.REVIEWS.read_text().splitlines()]
    assert sorted(r["item_id"] for r in lines) == sorted(expected)
    assert {r["status"] for r in lines} == {"completed"}
    assert all(r["output"]["label"] in {"positive", "negative", "neutral"} for r in lines)
    assert openai_emulator.stats.batches_created == 1
    # The wait task's progress line.
    assert f"run {key} completed: 20/20 done (0 failed), 0 in flight" in caplog.text
    assert task_runs(flow_run_id(first)) == {
        f"start-{key}": ("Completed", 1),
        f"wait-{key}": ("Completed", 1),
        f"collect-{key}": ("Completed", 1),
    }

    # A second flow run with the same run key: start and collect come from Prefect's cache,
    # the API is not called at all, and the results file is not written again.
    calls, written = openai_emulator.stats.total_calls, destination.stat().st_mtime_ns
    second = run_batch_job(
        job=example.make_job, destination=destination, run_key=key, config=config,
        return_state=True,
    )  # fmt: skip
    assert second.is_completed(), second
    assert second.result() == result
    assert openai_emulator.stats.total_calls == calls
    assert openai_emulator.stats.batches_created == 1
    assert destination.stat().st_mtime_ns == written
    states = task_runs(flow_run_id(second))
    assert states[f"start-{key}"][0] == "Cached"
    assert states[f"collect-{key}"][0] == "Cached"
    with BatchRunner(config.store, config.artifacts) as runner:
        assert [r.run_id for r in runner.store.list_runs()] == [key]

    # Each flow run published the summary table with the run's counts, tokens and cost.
    for state in (first, second):
        rows = {
            r["metric"]: r["value"] for r in table_artifact(artifact_key(key), flow_run_id(state))
        }
        assert rows["run_id"] == key
        assert rows["status"] == "completed"
        assert (rows["completed"], rows["failed"], rows["cancelled"]) == (20, 0, 0)
        assert rows["results"] == 20
        assert rows["input_tokens"] == result.input_tokens
        assert rows["output_tokens"] == result.output_tokens
        assert rows["cost_usd"] == pytest.approx(result.cost_usd, abs=1e-6)
        assert rows["results_uri"] == result.uri


def test_a_job_object_and_a_saved_block_keep_the_key_out_of_prefect(
    tmp_path: Path, results_dir: Path
) -> None:
    secret = f"sk-prefect-test-{uuid.uuid4().hex}"
    block_name = f"leak-test-{uuid.uuid4().hex[:8]}"
    destination = f"memory://batchor-prefect/{uuid.uuid4().hex}/labels.jsonl"
    with OpenAIBatchEmulator(api_key=secret) as emu:  # accepts only this key
        BatchorConfig(
            store=f"sqlite:///{tmp_path}/store/batchor.db",
            artifacts=str(tmp_path / "artifacts"),
            openai_api_key=secret,
        ).save(block_name)
        job = BatchJob(
            items=make_items(12),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=secret
            ),
            structured_output=Sentiment,
        )
        state = run_batch_job(
            job=job, destination=destination, config=block_name, return_state=True
        )
        assert state.is_completed(), state
        result = state.result()
        assert emu.stats.batches_created == 1

    # No run key given: it is derived from the flow run.
    run = flow_run_id(state)
    assert result.run_id == f"batchor-run-batch-job.{run}"
    assert result.counts["completed"] == 12
    with fsspec.open(destination, "rt") as fh:
        assert len(fh.read().splitlines()) == 12

    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(run).parameters
    assert parameters["job"] == "<BatchJob model=gpt-4.1-mini endpoint=/v1/responses>"
    assert parameters["config"] == block_name

    APILogWorker.drain_all()  # the task logs are in the database before it is searched
    database = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    places = [database.parent, results_dir, tmp_path]
    files = [f for place in places for f in place.rglob("*") if f.is_file()]
    assert any(f.name.startswith(database.name) for f in files)
    assert any(f.parent == results_dir for f in files)  # the cached results are there
    leaked = [f for f in files if secret.encode() in f.read_bytes()]
    assert leaked == []

    # What Prefect persisted for the cached tasks is the small handles, as JSON.
    persisted = set()
    for record in results_dir.iterdir():
        value = json.loads(json.loads(record.read_text())["result"])
        persisted.add(value["__class__"])
    assert persisted == {"batchor.handles.RunHandle", "batchor.handles.CollectResult"}


def test_subflow_calls_get_distinct_run_keys_stable_under_their_root(
    tmp_path: Path, openai_emulator: OpenAIBatchEmulator
) -> None:
    config = _config(tmp_path, openai_emulator)

    def job(text: str) -> BatchJob:
        return BatchJob(
            items=make_items(3),
            build_prompt=lambda item: PromptParts(prompt=f"{text}: {item.payload['text']}"),
            provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        )

    @flow
    def nightly() -> list[str]:
        first = run_batch_job(job=job("one"), destination="one.jsonl", config=config)
        second = run_batch_job(job=job("two"), destination="two.jsonl", config=config)
        return [first.run_id, second.run_id]

    state = nightly(return_state=True)
    assert state.is_completed(), state
    keys = state.result()
    root = str(flow_run_id(state))
    assert len(set(keys)) == 2
    assert all(k.startswith("batchor-run-batch-job.") and root in k for k in keys)
    assert openai_emulator.stats.batches_created == 2


def test_a_store_reset_under_a_cached_start_starts_the_run_again(
    tmp_path: Path, openai_emulator: OpenAIBatchEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, openai_emulator)
    job = BatchJob(
        items=make_items(5),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
    )
    first = run_batch_job(job=job, destination="a.jsonl", run_key="reset", config=config)
    assert first.counts["completed"] == 5
    (tmp_path / "store" / "batchor.db").unlink()  # someone wipes the store

    second = run_batch_job(job=job, destination="b.jsonl", run_key="reset", config=config)
    assert second.counts["completed"] == 5
    assert "no longer has: starting it again" in caplog.text
    # The run starts again, but the batch it had bought is found at the provider (same run,
    # key and request checksum) and adopted: nothing is bought twice.
    assert openai_emulator.stats.batches_created == 1
    assert "adopted provider batch" in caplog.text


def test_the_flow_loads_from_its_entrypoint_and_runs_on_json_parameters(
    tmp_path: Path, openai_emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a worker does for a deployment: load the flow from its entrypoint (a file of the
    # user's project that imports it), then call it with the parameters stored as JSON: the
    # job by import path, the block by name.
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    (tmp_path / "project_flows.py").write_text("from batchor_prefect import run_batch_job\n")
    loaded = load_flow_from_entrypoint(f"{tmp_path}/project_flows.py:run_batch_job")
    assert loaded is run_batch_job
    name = f"deployed-{uuid.uuid4().hex[:8]}"
    _config(tmp_path, openai_emulator).save(name)
    parameters = {
        "job": "classify_reviews:make_job",
        "destination": str(tmp_path / "labels.csv"),
        "run_key": "deployed-2026-11-30",
        "config": name,
    }
    state = loaded(**json.loads(json.dumps(parameters)), return_state=True)
    assert state.is_completed(), state
    assert state.result().counts["completed"] == 20
    assert len((tmp_path / "labels.csv").read_text().splitlines()) == 21  # header + rows


def test_a_retried_parent_flow_reuses_its_subflow_run(
    tmp_path: Path, openai_emulator: OpenAIBatchEmulator
) -> None:
    config = _config(tmp_path, openai_emulator)
    job = BatchJob(
        items=make_items(4),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
    )
    attempts: list[int] = []

    @flow(retries=1, retry_delay_seconds=0)
    def parent() -> str:
        attempts.append(1)
        # The first attempt's subflow fails after submitting (a destination it cannot write).
        destination = "labels.txt" if len(attempts) == 1 else "labels.jsonl"
        return run_batch_job(job=job, destination=destination, config=config).run_id

    state = parent(return_state=True)
    assert state.is_completed(), state
    assert len(attempts) == 2
    run_id = state.result()
    assert str(flow_run_id(state)) in run_id
    assert openai_emulator.stats.batches_created == 1
    with BatchRunner(config.store, config.artifacts) as runner:
        assert [r.run_id for r in runner.store.list_runs()] == [run_id]


def test_the_flow_class_survives_with_options_and_stores_no_secret() -> None:
    nightly = run_batch_job.with_options(name="nightly-reviews", retries=2)
    assert isinstance(nightly, BatchJobFlow)
    job = BatchJob(
        items=make_items(2),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini", api_key="sk-in-the-job"),
    )
    config = BatchorConfig(
        store="postgresql+psycopg://batchor:hunter2@db/batchor",
        openai_api_key="sk-in-the-block",
        api_keys={"gemini": "AIza-in-the-block"},
    )
    stored = nightly.serialize_parameters(
        {"job": job, "destination": "x.jsonl", "run_key": None, "config": config}
    )
    assert stored == {
        "job": "<BatchJob model=gpt-4.1-mini endpoint=/v1/responses>",
        "destination": "x.jsonl",
        "run_key": None,
        "config": {
            "store": "postgresql+psycopg://batchor:***@db/batchor",
            "artifacts": None,
            "openai_base_url": None,
            "openai_api_key": "set",
            "base_urls": None,
            "api_keys": "gemini",
        },
    }
    assert "AIza-in-the-block" not in str(stored)
    assert nightly.serialize_parameters({"job": prompt})["job"] == (
        "<callable tests.prefect.conftest:prompt>"
    )

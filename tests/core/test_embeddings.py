"""Embeddings jobs end to end: the real ``openai`` SDK over HTTP to the emulator's
``/v1/embeddings`` batches; results hold the vectors, exports write them, cost is priced."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from openai import OpenAI

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    ItemStatus,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
    RetryPolicy,
    estimate_job,
)
from batchor.cli.main import cli
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import Sentiment, make_items

MODEL = "text-embedding-3-small"
PRICE = 0.01  # USD per million input tokens: the Batch API price of text-embedding-3-small
DIMENSIONS = 256


def _text(item: BatchItem) -> PromptParts:
    return PromptParts(prompt=str(item.payload["text"]))


def _config(
    emu: OpenAIBatchEmulator | None, dimensions: int = DIMENSIONS, **params: Any
) -> OpenAIProviderConfig:
    """The embeddings config (``emu=None``: one that is never called)."""
    return OpenAIProviderConfig(
        model=MODEL,
        endpoint="/v1/embeddings",
        base_url=emu.base_url if emu is not None else "http://127.0.0.1:9/v1",
        api_key=emu.api_key if emu is not None else "sk-unused",
        request_params={"dimensions": dimensions, **params},
    )


def _job(emu: OpenAIBatchEmulator, items: Any, **kwargs: Any) -> BatchJob:
    return BatchJob(
        items=items,
        build_prompt=_text,
        provider_config=_config(emu),
        retry_policy=RetryPolicy(max_attempts=1),
        **kwargs,
    )


def _items(n: int) -> list[BatchItem]:
    return make_items(n, prefix="doc", text="passage {i} about vectors")


def _sent_vectors(emu: OpenAIBatchEmulator) -> dict[str, list[float]]:
    """Each embedded text's vector, as the emulator's output lines hold it (read back through
    the openai SDK while the emulator runs)."""
    client = OpenAI(base_url=emu.base_url, api_key=emu.api_key)
    vectors: dict[str, list[float]] = {}
    for batch in emu.batches():
        inputs = {}
        for line in client.files.content(batch["input_file_id"]).text.splitlines():
            request = json.loads(line)
            inputs[request["custom_id"]] = request["body"]["input"]
        if batch["output_file_id"] is None:
            continue
        for line in client.files.content(batch["output_file_id"]).text.splitlines():
            answer = json.loads(line)
            data = answer["response"]["body"]["data"]
            vectors[inputs[answer["custom_id"]]] = data[0]["embedding"]
    return vectors


def _norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def test_each_result_is_the_vector_the_provider_sent_and_is_priced(
    runner: BatchRunner, tmp_path: Path
) -> None:
    items = _items(200)
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu, items), "embed")
        summary = run.wait(poll_interval=0.05)
        sent = _sent_vectors(emu)
    assert summary.completed == 200
    texts = {item.item_id: str(item.payload["text"]) for item in items}
    results = list(run.results())
    assert len(results) == 200
    for result in results:
        assert result.status is ItemStatus.COMPLETED
        vector = result.output
        assert isinstance(vector, list)
        assert len(vector) == DIMENSIONS
        assert all(type(x) is float for x in vector)
        assert vector == sent[texts[result.item_id]]  # the very numbers, not just the size
        assert _norm(vector) == pytest.approx(1.0, abs=1e-5)
        assert result.output_text is not None
        assert json.loads(result.output_text) == vector  # the text stays the JSON array
        assert result.usage is not None
        assert result.usage.input_tokens > 0
        assert result.usage.output_tokens == 0
        assert result.to_dict()["output"] == vector
    # Usage and cost, from the price table's Batch API price (input tokens only).
    tokens = summary.usage.input_tokens
    assert tokens == sum(r.usage.input_tokens for r in results if r.usage)
    assert summary.usage.output_tokens == 0
    assert summary.cost_usd == pytest.approx(tokens * PRICE / 1_000_000)
    assert sum(b.cost_usd or 0 for b in run.batches()) == pytest.approx(summary.cost_usd)
    # A fresh runner knows the run's outputs are vectors from the store alone.
    with BatchRunner(
        store=f"sqlite:///{tmp_path}/store/batchor.db", artifacts=tmp_path / "artifacts"
    ) as fresh:
        again = fresh.get_run("embed")
        assert [r.output for r in again.results()] == [r.output for r in results]
        page = again.read_results(limit=5)
        assert [r.output for r in page.results] == [r.output for r in results[:5]]


def test_exports_hold_the_vectors_in_all_three_formats(runner: BatchRunner, tmp_path: Path) -> None:
    def refuse_one(custom_id: str, body: dict[str, Any]) -> str | None:
        return "bad_request" if body.get("input") == "passage 3 about vectors" else None

    with OpenAIBatchEmulator(faults=EmulatorFaults(line_fault=refuse_one)) as emu:
        run = runner.start(_job(emu, _items(40)), "embed-export")
        run.wait(poll_interval=0.05)
    results = list(run.results())
    vectors = [r.output for r in results]
    assert [r.status for r in results].count(ItemStatus.FAILED) == 1
    assert vectors[3] is None  # the refused item has no vector
    assert all(len(v) == DIMENSIONS for i, v in enumerate(vectors) if i != 3)

    # Parquet: ``output`` is a list<double> column holding the same vectors.
    assert run.export_results(tmp_path / "out.parquet") == 40
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("output").type == pa.list_(pa.float64())
    assert table.schema.field("output_text").type == pa.string()
    assert table.column("output").to_pylist() == vectors
    assert table.column("item_id").to_pylist() == [r.item_id for r in results]
    assert table.column("error_class").to_pylist()[3] == "invalid_request"

    # JSONL: ``output`` is a JSON array; each line is the result's to_dict.
    assert run.export_results(tmp_path / "out.jsonl") == 40
    with open(tmp_path / "out.jsonl") as fh:
        lines = [json.loads(line) for line in fh]
    assert [line["output"] for line in lines] == vectors
    assert lines == [r.to_dict() for r in results]

    # CSV: ``output`` is the array's JSON text.
    assert run.export_results(tmp_path / "out.csv") == 40
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [json.loads(row["output"]) if row["output"] else None for row in rows] == vectors
    assert rows[0]["output"].startswith("[")

    # ``batchor results`` reads the run back from the store and writes the same column.
    args = ["results", "embed-export", "--output", str(tmp_path / "cli.parquet")]
    args += ["--store", f"sqlite:///{tmp_path}/store/batchor.db"]
    args += ["--artifacts", str(tmp_path / "artifacts")]
    outcome = CliRunner().invoke(cli, args)
    assert outcome.exit_code == 0, outcome.output
    assert pq.read_table(tmp_path / "cli.parquet").column("output").to_pylist() == vectors


def test_a_system_prompt_is_refused_before_any_run_is_created(runner: BatchRunner) -> None:
    def with_system(item: BatchItem) -> PromptParts:
        return PromptParts(prompt=str(item.payload["text"]), system="Embed this.")

    with OpenAIBatchEmulator() as emu:
        job = BatchJob(items=_items(3), build_prompt=with_system, provider_config=_config(emu))
        with pytest.raises(ConfigurationError) as caught:
            runner.start(job, "embed-system")
        assert emu.stats.batches_created == 0
    message = str(caught.value)
    assert "\n" not in message
    assert "'doc-0'" in message  # names the item
    assert "system prompt" in message
    assert runner.store.list_runs() == []


def test_a_system_prompt_on_a_later_item_leaves_no_run_behind(runner: BatchRunner) -> None:
    def late_system(item: BatchItem) -> PromptParts:
        text = str(item.payload["text"])
        return PromptParts(prompt=text, system="Embed." if item.item_id == "doc-150" else None)

    with OpenAIBatchEmulator() as emu:
        job = BatchJob(items=_items(200), build_prompt=late_system, provider_config=_config(emu))
        with pytest.raises(ConfigurationError, match=r"'doc-150'.*system prompt"):
            runner.start(job, "embed-late-system")
        assert emu.stats.batches_created == 0
    assert runner.store.list_runs() == []


def test_structured_output_is_refused_when_the_job_is_made() -> None:
    with pytest.raises(ConfigurationError) as caught:
        BatchJob(
            items=_items(2),
            build_prompt=_text,
            provider_config=_config(None),
            structured_output=Sentiment,
        )
    message = str(caught.value)
    assert "\n" not in message
    assert "/v1/embeddings" in message
    assert "structured_output" in message


def test_base64_encoding_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="encoding_format must be 'float'") as caught:
        _config(None, encoding_format="base64")
    assert "\n" not in str(caught.value)


def test_the_dry_run_prices_an_embeddings_job() -> None:
    with OpenAIBatchEmulator() as emu:
        estimate = estimate_job(_job(emu, _items(120), limits=BatchLimits(max_requests=50)))
        assert emu.stats.batches_created == 0
    assert estimate.model == MODEL
    assert (estimate.requests, estimate.batches, estimate.too_large) == (120, 3, 0)
    assert estimate.max_output_tokens == 0  # a vector bills no output tokens
    expected = estimate.estimated_input_tokens * PRICE / 1_000_000
    assert estimate.estimated_input_cost_usd == pytest.approx(expected)
    assert estimate.estimated_max_cost_usd == pytest.approx(expected)


@pytest.mark.slow
def test_a_hundred_thousand_embeddings_run_to_a_parquet_vector_column(
    runner: BatchRunner, tmp_path: Path
) -> None:
    n, dims = 100_000, 64
    source_path = tmp_path / "docs.jsonl"
    with open(source_path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"doc-{i}", "text": f"passage {i} about vectors"}) + "\n")
    source = JsonlItemSource(source_path, id_field="id")
    started = time.monotonic()
    with OpenAIBatchEmulator() as emu:
        job = BatchJob(
            items=source,
            build_prompt=_text,
            provider_config=_config(emu, dimensions=dims),
            retry_policy=RetryPolicy(max_attempts=1),
        )
        run = runner.start(job, "embed-100k")
        summary = run.wait(poll_interval=0.1)
        ran = time.monotonic() - started
        batches = emu.batches()
    assert summary.completed == n
    # Exactly one provider batch per batch key: two batches of 50,000.
    keys = [b["metadata"]["batchor_batch_key"] for b in batches]
    assert len(keys) == len(set(keys)) == 2
    assert sorted(b["request_counts"]["total"] for b in batches) == [50_000, 50_000]
    assert [info.requests for info in run.batches()] == [50_000, 50_000]

    out = tmp_path / "vectors.parquet"
    assert run.export_results(out) == n
    exported = time.monotonic() - started - ran
    table = pq.read_table(out, columns=["item_id", "status", "output"])
    assert table.num_rows == n
    assert table.schema.field("output").type == pa.list_(pa.float64())
    assert pc.all(pc.equal(table.column("status"), "completed")).as_py()
    lengths = pc.list_value_length(table.column("output"))
    assert pc.min_max(lengths).as_py() == {"min": dims, "max": dims}
    first = table.slice(0, 1).to_pylist()[0]
    assert first["item_id"] == "doc-0"
    assert _norm(first["output"]) == pytest.approx(1.0, abs=1e-5)
    print(f"\n100,000 embeddings: run {ran:.1f} s, Parquet export {exported:.1f} s")

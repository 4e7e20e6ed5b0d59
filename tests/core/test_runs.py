"""Runs end to end: the real openai client over HTTP to the emulator, a real SQLite file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from batchor import (
    BatchJob,
    BatchRunner,
    DuplicateItemError,
    ItemStatus,
    JobMismatchError,
    OpenAIProviderConfig,
    ProviderAuthError,
    RunStatus,
    WaitTimeout,
)
from batchor.testing import OpenAIBatchEmulator

from .conftest import MakeJob, Sentiment, make_items, prompt

ENDPOINTS = ["/v1/responses", "/v1/chat/completions"]


def _prompt(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1]["content"])
    return str(body["input"])


def fault_by_marker(**markers: str) -> Any:
    """A line_fault answering with the fault named for a marker found in the prompt."""

    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        text = _prompt(body)
        for marker, kind in markers.items():
            if marker in text:
                return kind
        return None

    return fault


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_structured_run_completes_with_typed_results(
    runner: BatchRunner, make_job: MakeJob, endpoint: Any
) -> None:
    run = runner.run_and_wait(make_job(make_items(30), endpoint=endpoint), "structured")
    summary = run.summary()
    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 30
    results = list(run.results())
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(30)]
    for index, r in enumerate(results):
        assert r.status is ItemStatus.COMPLETED
        assert isinstance(r.output, Sentiment)
        assert r.error is None
        assert r.attempts == 1
        assert r.usage is not None
        assert r.usage.input_tokens > 0
        assert r.metadata == {"row": index}
    assert summary.usage.input_tokens == sum(r.usage.input_tokens for r in results if r.usage)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_text_run_returns_the_text(runner: BatchRunner, make_job: MakeJob, endpoint: Any) -> None:
    run = runner.run_and_wait(make_job(make_items(5), endpoint=endpoint, structured=None), "text")
    results = list(run.results())
    assert run.summary().status is RunStatus.COMPLETED
    assert all(r.status is ItemStatus.COMPLETED for r in results)
    assert "review 3" in results[3].output
    assert results[3].output == results[3].output_text


def test_results_are_matched_by_custom_id_not_line_order(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    openai_emulator.faults.shuffle_output = True
    run = runner.run_and_wait(make_job(make_items(40), structured=None), "shuffled")
    for r in run.results():
        assert r.output.endswith(f"review {r.item_id.split('-')[1]}")


@pytest.mark.parametrize("kind", ["server_error", "rate_limit"])
def test_transient_line_failures_are_retried_until_they_succeed(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator, kind: str
) -> None:
    failures_left = {"item-3": 2}

    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        if "review 3" in _prompt(body) and failures_left["item-3"] > 0:
            failures_left["item-3"] -= 1
            return kind
        return None

    openai_emulator.faults.line_fault = fault
    run = runner.run_and_wait(make_job(make_items(6)), "retry")
    by_id = {r.item_id: r for r in run.results()}
    assert run.summary().status is RunStatus.COMPLETED
    assert by_id["item-3"].attempts == 3
    assert by_id["item-3"].status is ItemStatus.COMPLETED
    assert by_id["item-3"].error is None  # the earlier attempts' error is not carried over
    assert by_id["item-3"].output is not None
    assert by_id["item-0"].attempts == 1
    assert openai_emulator.stats.batches_created == 3
    exported = runner.get_run("retry").export_results("retry.csv")
    assert exported == 6
    with open("retry.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["item_id"] == "item-3")
    assert (row["error_class"], row["error_message"], row["error_attempt"]) == ("", "", "")


def test_persistent_failures_fail_after_max_attempts_and_keep_their_reason(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    asked: list[str] = []

    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        asked.append(_prompt(body))
        return "server_error" if _prompt(body) == "review 1" else None

    openai_emulator.faults.line_fault = fault
    run = runner.run_and_wait(make_job(make_items(3), max_attempts=2), "persistent")
    summary = run.summary()
    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    failed = {r.item_id: r for r in run.results() if r.status is ItemStatus.FAILED}
    assert list(failed) == ["item-1"]
    assert failed["item-1"].attempts == 2
    assert failed["item-1"].error is not None
    assert failed["item-1"].error.error_class == "server_error"
    assert failed["item-1"].error.retryable
    assert "500" in failed["item-1"].error.message
    assert asked.count("review 1") == 2  # asked exactly max_attempts times
    assert asked.count("review 0") == 1


def test_invalid_request_fails_at_once(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    openai_emulator.faults.line_fault = fault_by_marker(**{"review 2": "bad_request"})
    run = runner.run_and_wait(make_job(make_items(4)), "bad-request")
    failed = [r for r in run.results() if r.status is ItemStatus.FAILED]
    assert [r.item_id for r in failed] == ["item-2"]
    assert failed[0].attempts == 1
    assert failed[0].error is not None
    assert failed[0].error.error_class == "invalid_request"
    assert not failed[0].error.retryable
    assert openai_emulator.stats.batches_created == 1


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [("invalid_json", "invalid_json"), ("schema_mismatch", "schema_validation")],
)
def test_replies_failing_validation_are_retried_then_failed(
    runner: BatchRunner,
    make_job: MakeJob,
    openai_emulator: OpenAIBatchEmulator,
    kind: str,
    error_class: str,
) -> None:
    openai_emulator.faults.line_fault = fault_by_marker(**{"review 0": kind})
    run = runner.run_and_wait(make_job(make_items(2), max_attempts=3), "validation")
    by_id = {r.item_id: r for r in run.results()}
    bad = by_id["item-0"]
    assert bad.status is ItemStatus.FAILED
    assert bad.attempts == 3
    assert bad.error is not None
    assert bad.error.error_class == error_class
    assert by_id["item-1"].status is ItemStatus.COMPLETED
    assert run.summary().status is RunStatus.COMPLETED_WITH_FAILURES


def test_expired_batch_keeps_answered_lines_and_requeues_the_rest_without_charge(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    openai_emulator.faults.expire_count = 1
    run = runner.run_and_wait(make_job(make_items(10)), "expiry")
    results = list(run.results())
    assert all(r.status is ItemStatus.COMPLETED for r in results)
    assert all(r.attempts == 1 for r in results)  # the expiry charged nothing
    assert openai_emulator.stats.batches_created == 2
    # Answered lines of the expired batch were never bought again.
    assert all(n == 1 for n in openai_emulator.stats.lines_answered.values())


def test_batches_are_filled_toward_the_limits(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    run = runner.run_and_wait(make_job(make_items(250), max_requests=100), "packing")
    assert run.summary().completed == 250
    assert run.summary().batches == {"collected": 3}
    sizes = sorted(b["request_counts"]["total"] for b in openai_emulator.batches())
    assert sizes == [50, 100, 100]


def test_batches_respect_the_byte_limit(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    items = make_items(20, text="x" * 400 + " {i}")
    run = runner.run_and_wait(make_job(items, max_bytes=5_000), "bytes")
    assert run.summary().completed == 20
    uploads = [f for f in openai_emulator.files() if f["purpose"] == "batch"]
    assert len(uploads) == openai_emulator.stats.batches_created > 1
    assert all(f["bytes"] <= 5_000 for f in uploads)


def test_a_request_larger_than_a_batch_fails_alone(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    items = [*make_items(3), *make_items(1, prefix="huge", text="x" * 3_000)]
    run = runner.run_and_wait(make_job(items, max_bytes=2_000), "too-large")
    by_id = {r.item_id: r for r in run.results()}
    assert by_id["huge-0"].status is ItemStatus.FAILED
    assert by_id["huge-0"].error is not None
    assert by_id["huge-0"].error.error_class == "request_too_large"
    assert [by_id[f"item-{i}"].status for i in range(3)] == [ItemStatus.COMPLETED] * 3
    assert run.summary().status is RunStatus.COMPLETED_WITH_FAILURES


def test_every_provider_batch_carries_its_batch_key(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    runner.run_and_wait(make_job(make_items(30), max_requests=10), "keys")
    keys = openai_emulator.stats.batches_by_metadata("batchor_batch_key")
    assert sorted(keys) == ["keys/000000", "keys/000001", "keys/000002"]
    assert set(keys.values()) == {1}
    assert set(openai_emulator.stats.batches_by_metadata("batchor_run_id")) == {"keys"}


def test_starting_the_same_run_again_submits_nothing_new(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    job = make_job(make_items(20))
    first = runner.start(job, "again")
    second = runner.start(job, "again")
    second.wait()
    assert first.summary().status is RunStatus.COMPLETED
    assert openai_emulator.stats.batches_created == 1
    assert second.summary().completed == 20


def test_wait_gives_up_at_its_timeout_and_the_run_goes_on(
    tmp_path: Path, runner: BatchRunner
) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.5) as emu:
        job = BatchJob(
            items=make_items(3),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model="m", base_url=emu.base_url, api_key=emu.api_key
            ),
        )
        run = runner.start(job, "slow")
        with pytest.raises(WaitTimeout) as info:
            run.wait(timeout=0.2, poll_interval=0.05)
        assert info.value.summary.status is RunStatus.RUNNING
        assert info.value.summary.items[ItemStatus.SUBMITTED] == 3
        assert run.wait(timeout=30, poll_interval=0.05).status is RunStatus.COMPLETED


def test_an_empty_source_completes_without_calling_the_provider(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    run = runner.run_and_wait(make_job([]), "empty")
    assert run.summary().status is RunStatus.COMPLETED
    assert run.summary().total == 0
    assert openai_emulator.stats.total_calls == 0


def test_a_different_job_under_the_same_run_id_is_refused(
    runner: BatchRunner, make_job: MakeJob
) -> None:
    runner.start(make_job(make_items(3)), "same")
    with pytest.raises(JobMismatchError, match="model changed"):
        runner.start(make_job(make_items(3), model="gpt-4.1"), "same")
    with pytest.raises(JobMismatchError, match="different prompts"):
        runner.start(make_job(make_items(3, text="other {i}")), "same")


def test_duplicate_item_ids_are_refused_before_anything_is_sent(
    runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    items = make_items(5) + make_items(1)
    with pytest.raises(DuplicateItemError, match=r"duplicate item_id 'item-0': items 1 and 6"):
        runner.start(make_job(items), "dupes")
    assert openai_emulator.stats.total_calls == 0
    # Nothing of the refused run is kept: the same id can be used for the corrected input.
    runner.run_and_wait(make_job(make_items(5)), "dupes")


def test_duplicates_across_ingestion_slices_are_found(
    runner: BatchRunner, make_job: MakeJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchor.engine.ingest.SLICE_SIZE", 4)
    items = make_items(10) + make_items(1, text="again")
    with pytest.raises(DuplicateItemError, match="'item-0'"):
        runner.start(make_job(items), "dupes-slices")


def test_a_fresh_process_rehydrates_the_run_and_reads_the_same_results(
    tmp_path: Path, runner: BatchRunner, make_job: MakeJob, openai_emulator: OpenAIBatchEmulator
) -> None:
    run = runner.start(make_job(make_items(12)), "fresh")
    script = textwrap.dedent(
        f"""
        import json
        from batchor import BatchRunner
        runner = BatchRunner(store="sqlite:///{tmp_path}/store/batchor.db",
                             artifacts="{tmp_path}/artifacts")
        run = runner.get_run("fresh")
        summary = run.wait()
        print(json.dumps({{"status": summary.status.value, "results": [
            dict(r.to_dict(), output_type=type(r.output).__name__) for r in run.results()]}}))
        """
    )
    env = dict(
        os.environ,
        OPENAI_API_KEY=openai_emulator.api_key,
        PYTHONPATH=str(Path(__file__).parents[2]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert child["status"] == "completed"
    assert [r["output_type"] for r in child["results"]] == ["Sentiment"] * 12
    mine = [r.to_dict() for r in run.results()]
    assert [{k: v for k, v in r.items() if k != "output_type"} for r in child["results"]] == mine
    assert run.summary().status is RunStatus.COMPLETED


def test_the_api_key_is_never_persisted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-SECRET-never-stored-0123456789"
    caplog.set_level("DEBUG")
    with (
        OpenAIBatchEmulator(api_key=secret) as emu,
        BatchRunner(f"sqlite:///{tmp_path}/k.db", tmp_path / "art") as r,
    ):
        job = BatchJob(
            items=make_items(5),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(model="m", base_url=emu.base_url, api_key=secret),
            structured_output=Sentiment,
        )
        assert secret not in repr(job)
        assert r.run_and_wait(job, "secret").summary().completed == 5
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in caplog.text


def test_a_wrong_api_key_is_reported_without_the_key(tmp_path: Path) -> None:
    with (
        OpenAIBatchEmulator(api_key="sk-right") as emu,
        BatchRunner(f"sqlite:///{tmp_path}/k.db", tmp_path / "art") as r,
    ):
        job = BatchJob(
            items=make_items(2),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model="m", base_url=emu.base_url, api_key="sk-wrong-key-123"
            ),
        )
        with pytest.raises(ProviderAuthError) as info:
            r.start(job, "wrong-key")
        assert "sk-wrong-key-123" not in str(info.value)

"""Every recovery path of collection (engine/collect.py), one ended batch at a time.

Each test starts a real run (a SQLite file, the emulator over HTTP), lets the emulator end
its batch with the fault under test, then drives the engine's own poll and collect steps and
asserts the state they leave: batch and item statuses, attempts, error classes and messages,
``failures``/``not_before``, the run's status, backoff and pause reason, and the provider
calls made. No time is slept through: backoffs are read back from the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from openai import OpenAI
from pydantic import BaseModel, create_model

from batchor import (
    ArtifactPolicy,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    OpenAIProviderConfig,
    RetryPolicy,
    RunStatus,
)
from batchor.engine import claims
from batchor.engine.collect import collect, collect_batch
from batchor.engine.context import RunContext
from batchor.engine.poll import poll
from batchor.providers.openai.transport import OpenAITransport
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord, ItemRow
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from ..stores.forge import forge_batch
from .conftest import Sentiment, make_items, prompt
from .contexts import emulator_transport, make_context

CONTENT = ("GET", "/v1/files/{id}/content")
QUOTA = "You exceeded your current quota, please check your plan and billing details."
Endpoint = Literal["/v1/responses", "/v1/chat/completions"]


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Handles rehydrated with get_run read the key from the environment, as users' would.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")


@pytest.fixture
def emu() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="batchor")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The batchor log lines, formatted (a record whose arguments do not fit fails here)."""
    return [r.getMessage() for r in caplog.records if r.name == "batchor"]


def job(
    emu: OpenAIBatchEmulator,
    n: int = 4,
    *,
    structured: type[BaseModel] | None = Sentiment,
    endpoint: Endpoint = "/v1/responses",
    max_attempts: int = 3,
    keep_raw_outputs: bool = True,
    max_requests: int = 50_000,
) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", endpoint=endpoint, base_url=emu.base_url, api_key=emu.api_key
        ),
        structured_output=structured,
        retry_policy=RetryPolicy(max_attempts=max_attempts),
        artifact_policy=ArtifactPolicy(keep_raw_outputs=keep_raw_outputs),
        limits=BatchLimits(max_requests=max_requests),
    )


def engine(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    run_id: str,
    model: type[BaseModel] | None = Sentiment,
) -> RunContext:
    """The engine's context for the run, as a worker builds it (provider without retries)."""
    record = runner.store.get_run(run_id)
    assert record is not None
    return make_context(runner, record, emulator_transport(emu), model)


def provider_done(emu: OpenAIBatchEmulator) -> None:
    """Wait for the emulator's worker to end every batch (it runs on its own thread)."""
    deadline = time.monotonic() + 20
    while any(
        b["status"] not in ("completed", "failed", "expired", "cancelled") for b in emu.batches()
    ):
        assert time.monotonic() < deadline, emu.batches()
        time.sleep(0.01)


def ended(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    j: BatchJob,
    run_id: str,
    *,
    batches: int = 1,
    **kw: Any,
) -> RunContext:
    """Start the run (one batch submitted), let the provider end it, poll it ``ended``."""
    runner.start(j, run_id)
    provider_done(emu)
    ctx = engine(runner, emu, run_id, **kw)
    assert poll(ctx) == batches
    return ctx


@contextmanager
def statements(runner: BatchRunner) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements the store runs meanwhile, with their parameters."""
    engine = runner.store.engine  # type: ignore[attr-defined]
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def claims_taken(seen: list[tuple[str, Any]]) -> int:
    """How many times the batch's claim was taken or renewed."""
    return sum(1 for sql, _ in seen if sql.startswith("UPDATE batchor_batches SET claimed_by="))


def mentions(seen: list[tuple[str, Any]], value: str) -> bool:
    return any(value in (p if isinstance(p, (list, tuple)) else [p]) for _, p in seen)


def rows(ctx: RunContext) -> dict[str, ItemRow]:
    return {r.item_id: r for r in ctx.store.item_rows(ctx.run.pk, 0, 10_000)}


def the_batch(ctx: RunContext) -> BatchRecord:
    (batch,) = ctx.store.batches(ctx.run.pk, list(BatchStatus))
    return batch


def run_record(ctx: RunContext) -> Any:
    record = ctx.store.get_run(ctx.run.run_id)
    assert record is not None
    return record


def rewrite(**by_item: Callable[[dict[str, Any]], dict[str, Any] | str | None]) -> Any:
    """An emulator ``line_rewrite`` changing the line of each named item (``item_2=...``);
    items are numbered from 0, their seq (the line's custom_id) from 1."""
    changes = {str(int(k.split("_")[1]) + 1): f for k, f in by_item.items()}

    def apply(line: dict[str, Any]) -> dict[str, Any] | str | None:
        change = changes.get(str(line["custom_id"]))
        return line if change is None else change(line)

    return apply


def error_line(error: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda line: {**line, "response": None, "error": error}


def usage_tokens(line: dict[str, Any]) -> tuple[int, int]:
    usage = line["response"]["body"]["usage"]
    return usage.get("input_tokens", usage.get("prompt_tokens")), usage.get(
        "output_tokens", usage.get("completion_tokens")
    )


def count_billed(emu: OpenAIBatchEmulator) -> list[int]:
    """The input and output tokens of every line the emulator answers, as it answers them."""
    billed = [0, 0]

    def count(line: dict[str, Any]) -> dict[str, Any]:
        tokens = usage_tokens(line)
        billed[0] += tokens[0]
        billed[1] += tokens[1]
        return line

    emu.faults.line_rewrite = count
    return billed


# ---- a completed batch ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/v1/responses", "/v1/chat/completions"])
def test_a_completed_batch_records_every_reply_and_its_tokens(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    logs: pytest.LogCaptureFixture,
    endpoint: Endpoint,
) -> None:
    ctx = ended(runner, emu, job(emu, 5, endpoint=endpoint), "ok")
    with statements(runner) as seen:
        assert collect(ctx) == 1
    # Every item answered: the look for unanswered ones (charged missing_output) is skipped.
    assert not mentions(seen, "missing_output")
    assert claims_taken(seen) == 2  # claimed, then renewed once the replies were applied
    items = rows(ctx)
    assert {r.status for r in items.values()} == {ItemStatus.COMPLETED}
    assert {r.attempts for r in items.values()} == {1}
    for r in items.values():
        assert Sentiment.model_validate_json(r.output_text or "")
        assert r.error_class is None
        assert r.input_tokens
        assert r.output_tokens
    batch = the_batch(ctx)
    assert batch.status is BatchStatus.COLLECTED
    assert batch.input_tokens == sum(r.input_tokens or 0 for r in items.values())
    assert batch.output_tokens == sum(r.output_tokens or 0 for r in items.values())
    run = run_record(ctx)
    assert (run.input_tokens, run.output_tokens) == (batch.input_tokens, batch.output_tokens)
    assert messages(logs)[-1] == "batch ok/000000: collected"
    assert not any("unanswered" in m for m in messages(logs))
    assert emu.stats.calls[CONTENT] == 1  # no error file to fetch
    # Nothing is left to collect; collecting again calls nothing.
    assert collect(ctx) == 0
    assert emu.stats.calls[CONTENT] == 1


@pytest.mark.parametrize("keep", [True, False])
def test_raw_files_are_kept_or_deleted_after_collection(
    tmp_path: Path, runner: BatchRunner, emu: OpenAIBatchEmulator, keep: bool
) -> None:
    emu.faults.line_fault = lambda cid, body: "server_error" if cid == "2" else None
    ctx = ended(runner, emu, job(emu, 3, keep_raw_outputs=keep), "raw")
    assert collect(ctx) == 1
    folder = tmp_path / "artifacts/runs/raw/batches/000000"
    assert (folder / "output.jsonl").exists() is keep
    assert (folder / "errors.jsonl").exists() is keep
    assert (folder / "input.jsonl").exists()
    assert emu.stats.calls[CONTENT] == 2
    assert rows(ctx)["item-1"].error_class == "server_error"


def test_items_missing_from_a_completed_batch_are_charged_missing_output(
    runner: BatchRunner, emu: OpenAIBatchEmulator, logs: pytest.LogCaptureFixture
) -> None:
    emu.faults.line_rewrite = rewrite(item_1=lambda line: None, item_3=lambda line: None)
    ctx = ended(runner, emu, job(emu, 5, max_attempts=2), "missing")
    with statements(runner) as seen:
        assert collect(ctx) == 1
    assert mentions(seen, "missing_output")
    items = rows(ctx)
    for name in ("item-1", "item-3"):
        r = items[name]
        assert (r.status, r.attempts) == (ItemStatus.PENDING, 1)
        assert r.error_class == "missing_output"
        assert r.error_message == "the provider's completed batch has no line for this item"
        assert r.error_retryable is True
        assert r.error_attempt == 1
    assert [items[f"item-{i}"].status for i in (0, 2, 4)] == [ItemStatus.COMPLETED] * 3
    assert the_batch(ctx).status is BatchStatus.COLLECTED
    assert "batch missing/000000: 2 unanswered items back to pending" in messages(logs)
    # Missing again on the last attempt: the item fails.
    emu.faults.line_rewrite = rewrite(item_0=lambda line: None, item_1=lambda line: None)
    runner.get_run("missing").refresh()  # packs and submits the two pending items
    provider_done(emu)
    ctx = engine(runner, emu, "missing")
    assert poll(ctx) == 1
    assert collect(ctx) == 1
    items = rows(ctx)
    assert (items["item-1"].status, items["item-1"].attempts) == (ItemStatus.FAILED, 2)
    assert items["item-1"].error_class == "missing_output"
    assert (items["item-3"].status, items["item-3"].attempts) == (ItemStatus.COMPLETED, 2)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            {"code": "internal_error", "message": "the line was lost"},
            "internal_error: the line was lost",
        ),
        ({"message": "no code given"}, "provider_error: no code given"),
        ({"code": "", "message": "empty code"}, "provider_error: empty code"),
        ({"code": "timeout"}, "timeout: "),
        (None, "provider_error: "),
        ("a bare string", ": a bare string"),
    ],
)
def test_an_error_line_that_is_not_expiry_or_cancellation_is_a_provider_error_retry(
    runner: BatchRunner, emu: OpenAIBatchEmulator, error: Any, message: str
) -> None:
    emu.faults.line_rewrite = rewrite(item_2=error_line(error))
    ctx = ended(runner, emu, job(emu, 4), "line-error")
    assert collect(ctx) == 1
    items = rows(ctx)
    bad = items["item-2"]
    assert (bad.status, bad.attempts) == (ItemStatus.PENDING, 1)
    assert (bad.error_class, bad.error_message) == ("provider_error", message)
    assert bad.error_retryable is True
    assert bad.output_text is None
    assert (bad.input_tokens, bad.output_tokens) == (None, None)
    assert all(items[f"item-{i}"].status is ItemStatus.COMPLETED for i in (0, 1, 3))
    # The lines without usage add nothing to the batch's tokens.
    batch = the_batch(ctx)
    assert batch.input_tokens == sum(r.input_tokens or 0 for r in items.values())
    assert batch.output_tokens == sum(r.output_tokens or 0 for r in items.values())
    assert emu.stats.calls[CONTENT] == 2


def test_a_provider_error_line_on_the_last_attempt_fails_the_item(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.line_rewrite = rewrite(item_0=error_line({"code": "server_error", "message": "x"}))
    ctx = ended(runner, emu, job(emu, 2, max_attempts=1), "line-error-last")
    assert collect(ctx) == 1
    bad = rows(ctx)["item-0"]
    assert (bad.status, bad.attempts, bad.error_class) == (ItemStatus.FAILED, 1, "provider_error")
    assert bad.error_message == "server_error: x"


def test_lines_that_are_not_batch_results_are_skipped_and_their_items_charged(
    runner: BatchRunner, emu: OpenAIBatchEmulator, logs: pytest.LogCaptureFixture
) -> None:
    emu.faults.line_rewrite = rewrite(
        item_0=lambda line: "this is not JSON",
        item_1=lambda line: {**line, "custom_id": "seq-two"},
        item_2=lambda line: {k: v for k, v in line.items() if k != "custom_id"},
        item_3=lambda line: {**line, "custom_id": None},
        item_4=lambda line: "   ",
    )
    ctx = ended(runner, emu, job(emu, 6), "garbage")
    assert collect(ctx) == 1
    items = rows(ctx)
    for i in range(5):
        assert (items[f"item-{i}"].status, items[f"item-{i}"].attempts) == (ItemStatus.PENDING, 1)
        assert items[f"item-{i}"].error_class == "missing_output"
    assert items["item-5"].status is ItemStatus.COMPLETED
    skipped = "runs/garbage/batches/000000/output.jsonl: skipped a line that is not a batch result"
    assert messages(logs).count(skipped) == 4  # the blank line is passed over silently
    assert "batch garbage/000000: 5 unanswered items back to pending" in messages(logs)


def test_a_line_whose_custom_id_is_a_number_is_matched(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.line_rewrite = rewrite(item_1=lambda line: {**line, "custom_id": 2})
    ctx = ended(runner, emu, job(emu, 2), "int-id")
    assert collect(ctx) == 1
    assert {r.status for r in rows(ctx).values()} == {ItemStatus.COMPLETED}


def _refusal(line: dict[str, Any]) -> dict[str, Any]:
    body = line["response"]["body"]
    body["output"][0]["content"] = [{"type": "refusal", "refusal": "I cannot label this."}]
    return line


def _http_500(line: dict[str, Any]) -> dict[str, Any]:
    error = {"message": "overloaded", "type": "server_error", "code": None}
    line["response"] = {"status_code": 500, "request_id": "r", "body": {"error": error}}
    return line


def test_replies_the_provider_marked_as_errors_keep_their_class_and_tokens(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    usage: dict[str, tuple[int, int]] = {}

    def refusal(line: dict[str, Any]) -> dict[str, Any]:
        usage["refused"] = usage_tokens(line)
        return _refusal(line)

    emu.faults.line_rewrite = rewrite(item_0=refusal, item_1=_http_500)
    ctx = ended(runner, emu, job(emu, 3), "replies")
    assert collect(ctx) == 1
    items = rows(ctx)
    refused = items["item-0"]
    assert (refused.status, refused.attempts) == (ItemStatus.FAILED, 1)
    assert (refused.error_class, refused.error_message) == ("refusal", "I cannot label this.")
    assert refused.error_retryable is False
    assert (refused.input_tokens, refused.output_tokens) == usage["refused"]
    failed = items["item-1"]
    assert (failed.status, failed.attempts) == (ItemStatus.PENDING, 1)
    assert (failed.error_class, failed.error_message) == ("server_error", "HTTP 500: overloaded")
    assert failed.error_retryable is True
    batch = the_batch(ctx)
    assert batch.input_tokens == usage["refused"][0] + (items["item-2"].input_tokens or 0)


def test_a_reply_the_store_refuses_fails_only_its_item(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    def huge(line: dict[str, Any]) -> dict[str, Any]:
        line["response"]["body"]["usage"]["input_tokens"] = 10**30
        return line

    emu.faults.line_rewrite = rewrite(item_1=huge)
    ctx = ended(runner, emu, job(emu, 3), "unstorable")
    assert collect(ctx) == 1
    items = rows(ctx)
    bad = items["item-1"]
    assert (bad.status, bad.attempts, bad.error_class) == (ItemStatus.FAILED, 1, "unstorable")
    assert (bad.error_message or "").startswith("the reply could not be stored: ")
    assert [items[f"item-{i}"].status for i in (0, 2)] == [ItemStatus.COMPLETED] * 2
    assert the_batch(ctx).status is BatchStatus.COLLECTED
    assert run_record(ctx).input_tokens == 2**53  # the billed total, bounded


# ---- validation of structured replies --------------------------------------------------------


def _reply_text(text: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(line: dict[str, Any]) -> dict[str, Any]:
        body = line["response"]["body"]
        if "output" in body:
            body["output"][0]["content"][0]["text"] = text
        else:
            body["choices"][0]["message"]["content"] = text
        return line

    return change


@pytest.mark.parametrize("endpoint", ["/v1/responses", "/v1/chat/completions"])
def test_replies_that_fail_validation_are_retried_with_their_text_and_reason(
    runner: BatchRunner, emu: OpenAIBatchEmulator, endpoint: Endpoint
) -> None:
    emu.faults.line_rewrite = rewrite(
        item_0=_reply_text('{"label": "positive", "score"'),
        item_1=_reply_text('{"label": "great", "score": 1, "note": null}'),
    )
    ctx = ended(runner, emu, job(emu, 3, endpoint=endpoint), "validation")
    assert collect(ctx) == 1
    items = rows(ctx)
    broken, wrong = items["item-0"], items["item-1"]
    assert (broken.status, broken.attempts, broken.error_class) == (
        ItemStatus.PENDING, 1, "invalid_json",
    )  # fmt: skip
    assert (broken.error_message or "").startswith("reply is not valid JSON: 1 validation error")
    assert broken.output_text == '{"label": "positive", "score"'
    assert broken.error_retryable is True
    assert broken.input_tokens
    assert broken.output_tokens
    assert (wrong.status, wrong.error_class) == (ItemStatus.PENDING, "schema_validation")
    assert (wrong.error_message or "").startswith("reply does not match Sentiment: ")
    assert "label" in (wrong.error_message or "")
    assert wrong.output_text == '{"label": "great", "score": 1, "note": null}'
    assert items["item-2"].status is ItemStatus.COMPLETED


# A model whose every field is missing from a reply: a validation message of many lines.
Wide = create_model("Wide", **{f"field_number_{i:03d}": (int, ...) for i in range(120)})  # type: ignore[call-overload]


def test_a_long_validation_message_is_cut_to_2000_characters(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 1), "long-message", model=Wide)
    assert collect(ctx) == 1
    (item,) = rows(ctx).values()
    assert item.error_class == "schema_validation"
    assert item.error_message is not None
    assert len(item.error_message) == 2000
    assert item.error_message.startswith("reply does not match Wide: 120 validation errors")


@pytest.mark.parametrize(
    ("text", "status", "error_class", "message"),
    [
        ('{"any": "object"}', ItemStatus.COMPLETED, None, None),
        ("[1, 2]", ItemStatus.PENDING, "schema_validation", "reply is not a JSON object"),
        ('"text"', ItemStatus.PENDING, "schema_validation", "reply is not a JSON object"),
        (
            "{not json",
            ItemStatus.PENDING,
            "invalid_json",
            "reply is not valid JSON: unexpected character, expected a string key: "
            "line 1 column 2 (char 1)",
        ),
    ],
)
def test_without_the_model_class_a_structured_reply_must_be_a_json_object(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    text: str,
    status: ItemStatus,
    error_class: str | None,
    message: str | None,
) -> None:
    emu.faults.line_rewrite = rewrite(item_0=_reply_text(text))
    ctx = ended(runner, emu, job(emu, 2), "no-model", model=None)
    assert collect(ctx) == 1
    item = rows(ctx)["item-0"]
    assert (item.status, item.error_class) == (status, error_class)
    assert item.output_text == text
    assert item.error_message == message
    assert rows(ctx)["item-1"].status is ItemStatus.COMPLETED


def test_a_text_run_takes_any_reply_text(runner: BatchRunner, emu: OpenAIBatchEmulator) -> None:
    emu.faults.line_rewrite = rewrite(item_0=_reply_text("{not json"))
    ctx = ended(runner, emu, job(emu, 1, structured=None), "text", model=None)
    assert collect(ctx) == 1
    (item,) = rows(ctx).values()
    assert (item.status, item.output_text, item.error_class) == (
        ItemStatus.COMPLETED, "{not json", None,
    )  # fmt: skip


def test_outcomes_are_applied_in_chunks(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchor.engine.feed.CHUNK", 2)
    emu.faults.line_fault = lambda cid, body: "server_error" if cid in ("2", "6") else None
    ctx = ended(runner, emu, job(emu, 7), "chunks")
    with statements(runner) as seen:
        assert collect(ctx) == 1
    # Claimed, then renewed after each chunk: 5 output lines in 2 + 2 + 1, 2 error lines in
    # 2 + 0.
    assert claims_taken(seen) == 1 + 3 + 2
    assert not mentions(seen, "missing_output")
    items = rows(ctx)
    assert [items[f"item-{i}"].status for i in range(7)] == [
        ItemStatus.COMPLETED, ItemStatus.PENDING, *[ItemStatus.COMPLETED] * 3,
        ItemStatus.PENDING, ItemStatus.COMPLETED,
    ]  # fmt: skip
    assert {r.attempts for r in items.values()} == {1}
    batch = the_batch(ctx)
    assert batch.status is BatchStatus.COLLECTED
    assert batch.input_tokens == sum(r.input_tokens or 0 for r in items.values())


# ---- a batch that failed as a whole ----------------------------------------------------------


def test_insufficient_quota_pauses_the_run_and_requeues_without_charge(
    runner: BatchRunner, emu: OpenAIBatchEmulator, logs: pytest.LogCaptureFixture
) -> None:
    emu.faults.fail_batch_count = 1
    ctx = ended(runner, emu, job(emu, 4), "quota")
    assert collect(ctx) == 1
    items = rows(ctx)
    assert {(r.status, r.attempts, r.error_class) for r in items.values()} == {
        (ItemStatus.PENDING, 0, None)
    }
    batch = the_batch(ctx)
    assert (batch.status, batch.provider_status) == (BatchStatus.COLLECTED, "failed")
    run = run_record(ctx)
    assert run.status is RunStatus.PAUSED
    assert run.pause_reason == f"insufficient_quota: {QUOTA}"
    assert (run.backoff_until, run.backoff_count) == (None, 0)
    assert f"run quota paused: insufficient_quota: {QUOTA}" in messages(logs)
    assert "batch quota/000000: 4 unanswered items back to pending" in messages(logs)
    assert emu.stats.calls[CONTENT] == 0  # a failed batch has no files
    assert emu.stats.batches_created == 1


def test_a_quota_failure_keeps_the_reason_of_a_run_paused_by_hand(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.fail_batch_count = 1
    ctx = ended(runner, emu, job(emu, 2), "paused")
    runner.get_run("paused").pause("maintenance window")
    ctx.run = run_record(ctx)
    assert collect(ctx) == 1
    run = run_record(ctx)
    assert (run.status, run.pause_reason) == (RunStatus.PAUSED, "maintenance window")
    assert {r.attempts for r in rows(ctx).values()} == {0}


def test_the_quota_error_is_picked_among_the_batch_errors(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.fail_batch_count = 1
    emu.faults.fail_batch_errors = [
        ("token_limit_exceeded", "Enqueued token limit reached."),
        ("insufficient_quota", "No credit left."),
    ]
    ctx = ended(runner, emu, job(emu, 2), "mixed")
    assert collect(ctx) == 1
    run = run_record(ctx)
    assert (run.status, run.pause_reason) == (
        RunStatus.PAUSED,
        "insufficient_quota: No credit left.",
    )
    assert (run.backoff_until, run.backoff_count) == (None, 0)  # the pause, not a backoff
    assert {(r.status, r.attempts) for r in rows(ctx).values()} == {(ItemStatus.PENDING, 0)}


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        (
            [("invalid_request", "Line 1: bad body."), ("model_not_found", "No such model.")],
            "invalid_request: Line 1: bad body.; model_not_found: No such model.",
        ),
        (
            [("insufficient_quota", "No credit left."), ("invalid_request", "Bad body.")],
            "insufficient_quota: No credit left.; invalid_request: Bad body.",
        ),
        ([], "batch failed"),
        ([("invalid_request", "x" * 3000)], ("invalid_request: " + "x" * 3000)[:2000]),
    ],
)
def test_other_batch_failures_charge_each_item_with_the_provider_messages(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    logs: pytest.LogCaptureFixture,
    errors: list[tuple[str, str]],
    message: str,
) -> None:
    emu.faults.fail_batch_count = 1
    emu.faults.fail_batch_errors = errors
    ctx = ended(runner, emu, job(emu, 3), "failed")
    runner.store.set_backoff(ctx.run.pk, None, 2)  # earlier capacity refusals
    ctx.run = run_record(ctx)
    assert collect(ctx) == 1
    for r in rows(ctx).values():
        assert (r.status, r.attempts, r.error_attempt) == (ItemStatus.PENDING, 1, 1)
        assert (r.error_class, r.error_message) == ("batch_failed", message)
        assert r.error_retryable is True
    assert the_batch(ctx).status is BatchStatus.COLLECTED
    assert "batch failed/000000: 3 unanswered items back to pending" in messages(logs)
    run = run_record(ctx)
    quota = any(code == "insufficient_quota" for code, _ in errors)
    assert run.status is (RunStatus.PAUSED if quota else RunStatus.RUNNING)
    assert run.backoff_count == 2  # only a completed batch resets the backoff


def test_a_batch_failure_on_the_last_attempt_fails_the_items(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.fail_batch_count = 1
    emu.faults.fail_batch_errors = [("invalid_request", "Bad body.")]
    ctx = ended(runner, emu, job(emu, 2, max_attempts=1), "failed-last")
    assert collect(ctx) == 1
    assert {(r.status, r.attempts, r.error_class) for r in rows(ctx).values()} == {
        (ItemStatus.FAILED, 1, "batch_failed")
    }


def test_a_batch_over_the_provider_line_limit_fails_with_its_validation_errors(
    runner: BatchRunner,
) -> None:
    from batchor.testing.emulator.limits import EmulatorLimits

    with OpenAIBatchEmulator(limits=EmulatorLimits(max_batch_lines=2)) as small:
        ctx = ended(runner, small, job(small, 3), "too-many")
        remote = small.batches()[0]
        assert remote["status"] == "failed"
        (error,) = remote["errors"]["data"]
        assert collect(ctx) == 1
        for r in rows(ctx).values():
            assert (r.status, r.attempts, r.error_class) == (ItemStatus.PENDING, 1, "batch_failed")
            assert r.error_message == f"{error['code']}: {error['message']}"


# ---- the capacity backoff ----------------------------------------------------------------------


@pytest.mark.parametrize(("before", "ceiling"), [(0, 0.05), (1, 0.1), (2, 0.2), (5, 0.2)])
def test_token_limit_failures_back_off_packing_doubling_to_the_cap(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    logs: pytest.LogCaptureFixture,
    before: int,
    ceiling: float,
) -> None:
    # conftest sets the capacity backoff to a base of 0.05 s and a cap of 0.2 s.
    emu.faults.fail_token_limit_count = 1
    ctx = ended(runner, emu, job(emu, 3), "capacity")
    runner.store.set_backoff(ctx.run.pk, None, before)
    ctx.run = run_record(ctx)
    start = time.time()
    assert collect(ctx) == 1
    end = time.time()
    run = run_record(ctx)
    assert run.backoff_count == before + 1
    assert run.backoff_until is not None
    assert start + ceiling / 2 <= run.backoff_until <= end + ceiling
    assert run.status is RunStatus.RUNNING
    assert {(r.status, r.attempts, r.error_class) for r in rows(ctx).values()} == {
        (ItemStatus.PENDING, 0, None)
    }
    assert "run capacity: token limit reached; packing resumes in 0 s" in messages(logs)


class TestDocumentedCapacityBackoff:
    """With the shipped constants: 30 s doubling up to 15 minutes (equal jitter)."""

    @pytest.fixture(autouse=True)
    def _quick_backoff(self) -> None:
        """Overrides conftest's: the real capacity backoff."""

    @pytest.mark.parametrize(("before", "ceiling"), [(0, 30.0), (1, 60.0), (4, 480.0), (9, 900.0)])
    def test_the_shipped_capacity_backoff(
        self,
        runner: BatchRunner,
        emu: OpenAIBatchEmulator,
        logs: pytest.LogCaptureFixture,
        before: int,
        ceiling: float,
    ) -> None:
        emu.faults.fail_token_limit_count = 1
        ctx = ended(runner, emu, job(emu, 2), "shipped")
        runner.store.set_backoff(ctx.run.pk, None, before)
        ctx.run = run_record(ctx)
        start = time.time()
        assert collect(ctx) == 1
        end = time.time()
        run = run_record(ctx)
        assert run.backoff_count == before + 1
        assert run.backoff_until is not None
        assert ceiling / 2 <= run.backoff_until - start
        assert run.backoff_until - end <= ceiling
        (said,) = [m for m in messages(logs) if "token limit reached" in m]
        prefix = "run shipped: token limit reached; packing resumes in "
        assert said.startswith(prefix)
        assert said.endswith(" s")
        logged = float(said.removeprefix(prefix).removesuffix(" s"))
        assert run.backoff_until - end - 1 <= logged <= run.backoff_until - start + 1


def test_a_completed_batch_resets_the_capacity_backoff(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 2), "reset")
    runner.store.set_backoff(ctx.run.pk, time.time() + 600, 3)
    ctx.run = run_record(ctx)
    assert collect(ctx) == 1
    run = run_record(ctx)
    assert (run.backoff_until, run.backoff_count) == (None, 0)


def test_an_expired_batch_leaves_the_capacity_backoff_alone(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.expire_count = 1
    ctx = ended(runner, emu, job(emu, 4), "expired-backoff")
    until = time.time() + 600
    runner.store.set_backoff(ctx.run.pk, until, 3)
    ctx.run = run_record(ctx)
    assert collect(ctx) == 1
    run = run_record(ctx)
    assert run.backoff_count == 3
    assert run.backoff_until == pytest.approx(until)


# ---- batches the provider did not finish ---------------------------------------------------------


def test_an_expired_batch_keeps_its_answered_lines_and_requeues_the_rest_uncharged(
    runner: BatchRunner, emu: OpenAIBatchEmulator, logs: pytest.LogCaptureFixture
) -> None:
    emu.faults.expire_count = 1
    ctx = ended(runner, emu, job(emu, 6), "expired")
    assert the_batch(ctx).provider_status == "expired"
    assert collect(ctx) == 1
    items = rows(ctx)
    assert [(items[f"item-{i}"].status, items[f"item-{i}"].attempts) for i in range(6)] == [
        *[(ItemStatus.COMPLETED, 1)] * 3, *[(ItemStatus.PENDING, 0)] * 3,
    ]  # fmt: skip
    assert {items[f"item-{i}"].error_class for i in range(3, 6)} == {None}
    assert the_batch(ctx).status is BatchStatus.COLLECTED
    assert emu.stats.calls[CONTENT] == 2  # the answered lines and the unexecuted ones
    assert "batch expired/000000: 3 unanswered items back to pending" in messages(logs)
    assert run_record(ctx).status is RunStatus.RUNNING


def test_expiry_lines_in_an_expired_batch_are_not_charged_even_on_the_last_attempt(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.expire_count = 1
    ctx = ended(runner, emu, job(emu, 2, max_attempts=1), "expired-last")
    assert collect(ctx) == 1
    items = rows(ctx)
    assert (items["item-0"].status, items["item-0"].attempts) == (ItemStatus.COMPLETED, 1)
    assert (items["item-1"].status, items["item-1"].attempts) == (ItemStatus.PENDING, 0)


def test_a_cancelled_batch_requeues_its_unanswered_items_uncharged(
    runner: BatchRunner, logs: pytest.LogCaptureFixture
) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.6) as slow:
        runner.start(job(slow, 3), "cancelled")
        client = OpenAI(base_url=slow.base_url, api_key=slow.api_key, max_retries=0)
        client.batches.cancel(slow.batches()[0]["id"])  # cancelled while validating
        provider_done(slow)
        ctx = engine(runner, slow, "cancelled")
        assert poll(ctx) == 1
        assert the_batch(ctx).provider_status == "cancelled"
        assert collect(ctx) == 1
        assert {(r.status, r.attempts, r.error_class) for r in rows(ctx).values()} == {
            (ItemStatus.PENDING, 0, None)
        }
        assert the_batch(ctx).status is BatchStatus.COLLECTED
        assert "batch cancelled/000000: 3 unanswered items back to pending" in messages(logs)


# ---- downloads, claims and repeated collection -------------------------------------------------


def test_a_file_not_available_yet_postpones_the_batch_with_backoff(
    runner: BatchRunner, emu: OpenAIBatchEmulator, logs: pytest.LogCaptureFixture
) -> None:
    # conftest sets the transient backoff base to 0.05 s.
    emu.faults.output_file_delay = 600
    ctx = ended(runner, emu, job(emu, 2), "late")
    for failures, ceiling in [(1, 0.05), (2, 0.1), (3, 0.2)]:
        start = time.time()
        assert collect(ctx) == 0
        end = time.time()
        batch = the_batch(ctx)
        assert (batch.status, batch.failures) == (BatchStatus.ENDED, failures)
        assert batch.not_before is not None
        assert start + ceiling / 2 <= batch.not_before <= end + ceiling
        assert emu.stats.calls[CONTENT] == failures
        # Until not_before has passed the batch is left alone: nothing is fetched.
        forge_batch(runner.store, batch.pk, not_before=time.time() + 600)
        assert collect(ctx) == 0
        assert emu.stats.calls[CONTENT] == failures
        forge_batch(runner.store, batch.pk, not_before=time.time() - 1)
    assert {(r.status, r.attempts) for r in rows(ctx).values()} == {(ItemStatus.SUBMITTED, 0)}
    postponed = [m for m in messages(logs) if "download postponed" in m]
    assert len(postponed) == 3
    file_id = emu.batches()[0]["output_file_id"]
    assert (
        postponed[0]
        == f"batch late/000000: download postponed 0 s: file {file_id} is not available yet"
    )


def test_a_batch_with_a_past_not_before_is_collected(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 2), "due")
    batch = the_batch(ctx)
    runner.store.postpone(batch.pk, BatchStatus.ENDED, failures=2, not_before=time.time() - 1)
    assert collect(ctx) == 1
    assert the_batch(ctx).status is BatchStatus.COLLECTED


def test_a_batch_claimed_by_a_live_worker_elsewhere_is_left_to_it(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 2), "claimed")
    batch = the_batch(ctx)
    other = "another-host:4242:1"  # another machine: only its lease can tell it is gone
    assert runner.store.claim_batch(batch.pk, BatchStatus.ENDED, other, 60)
    assert collect(ctx) == 0
    assert (the_batch(ctx).status, the_batch(ctx).claimed_by) == (BatchStatus.ENDED, other)
    assert emu.stats.calls[CONTENT] == 0
    assert {r.status for r in rows(ctx).values()} == {ItemStatus.SUBMITTED}


def test_a_batch_claimed_by_a_process_that_is_gone_is_taken_over(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 2), "orphaned")
    batch = the_batch(ctx)
    dead = f"{claims._HOST}:{_dead_pid()}:1"
    assert runner.store.claim_batch(batch.pk, BatchStatus.ENDED, dead, 600)
    assert collect(ctx) == 1
    collected = the_batch(ctx)
    assert collected.status is BatchStatus.COLLECTED
    assert collected.claimed_by == claims.owner()
    assert {r.status for r in rows(ctx).values()} == {ItemStatus.COMPLETED}


def test_a_batch_claimed_by_this_worker_is_collected(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 2), "mine")
    batch = the_batch(ctx)
    assert runner.store.claim_batch(batch.pk, BatchStatus.ENDED, claims.owner(), 600)
    assert collect(ctx) == 1
    assert the_batch(ctx).status is BatchStatus.COLLECTED


def _dead_pid() -> int:
    """A pid no process has (the highest ones are never reached in a test)."""
    pid = 4_194_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_collecting_a_batch_again_applies_nothing_twice(
    runner: BatchRunner, emu: OpenAIBatchEmulator, logs: pytest.LogCaptureFixture
) -> None:
    """An interrupted collection is run again from the start: the lines it applied already
    change nothing, the run's tokens and backoff count once."""
    emu.faults.fail_token_limit_count = 1
    ctx = ended(runner, emu, job(emu, 2), "twice")
    stale = the_batch(ctx)
    collect_batch(ctx, stale)
    first = run_record(ctx)
    assert first.backoff_count == 1
    collect_batch(ctx, stale)  # the same record, as the interrupted worker read it
    again = run_record(ctx)
    assert (again.backoff_count, again.backoff_until) == (1, first.backoff_until)
    assert messages(logs).count("batch twice/000000: collected") == 1
    assert messages(logs).count("batch twice/000000: 2 unanswered items back to pending") == 1


def test_collecting_a_completed_batch_again_counts_its_tokens_once(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.line_fault = lambda cid, body: "server_error" if cid == "1" else None
    ctx = ended(runner, emu, job(emu, 3, keep_raw_outputs=False), "tokens-once")
    stale = the_batch(ctx)
    collect_batch(ctx, stale)
    first = run_record(ctx)
    collect_batch(ctx, stale)
    again = run_record(ctx)
    assert (again.input_tokens, again.output_tokens) == (first.input_tokens, first.output_tokens)
    items = rows(ctx)
    assert (items["item-0"].status, items["item-0"].attempts) == (ItemStatus.PENDING, 1)
    assert {items[f"item-{i}"].attempts for i in (1, 2)} == {1}
    assert emu.stats.calls[CONTENT] == 4  # raw files deleted after the first: fetched again


def test_the_claim_is_renewed_as_outcomes_are_applied(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "120")
    with OpenAIBatchEmulator(faults=EmulatorFaults(latency=0.3)) as slow:
        ctx = ended(runner, slow, job(slow, 2), "renewed")
        start = time.time()
        assert collect(ctx) == 1
    batch = the_batch(ctx)
    assert batch.claimed_by == claims.owner()
    # Claimed before the download (which takes the emulator's latency), renewed after it.
    assert batch.lease_until is not None
    assert batch.lease_until >= start + 120 + 0.3


def test_a_response_without_a_status_code_fails_its_item(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    def no_status(line: dict[str, Any]) -> dict[str, Any]:
        del line["response"]["status_code"]
        return line

    emu.faults.line_rewrite = rewrite(item_0=no_status)
    ctx = ended(runner, emu, job(emu, 2), "no-status")
    assert collect(ctx) == 1
    item = rows(ctx)["item-0"]
    assert (item.status, item.attempts) == (ItemStatus.FAILED, 1)
    assert (item.error_class, item.error_message) == ("invalid_request", "HTTP 0")
    assert item.error_retryable is False


def test_a_batch_held_back_does_not_hold_back_the_others(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ended(runner, emu, job(emu, 10, max_requests=2), "several", batches=5)
    waiting, deleted, free, claimed, also_free = ctx.store.batches(ctx.run.pk, [BatchStatus.ENDED])
    forge_batch(runner.store, waiting.pk, not_before=time.time() + 600)
    client = OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
    assert deleted.output_file_id is not None
    client.files.delete(deleted.output_file_id)  # gone at the provider: 404, postponed
    assert runner.store.claim_batch(claimed.pk, BatchStatus.ENDED, "another-host:1:1", 60)
    assert collect(ctx) == 2
    after = {b.pk: b for b in ctx.store.batches(ctx.run.pk, list(BatchStatus))}
    assert [after[b.pk].status for b in (free, also_free)] == [BatchStatus.COLLECTED] * 2
    assert [after[b.pk].status for b in (waiting, deleted, claimed)] == [BatchStatus.ENDED] * 3
    assert (after[deleted.pk].failures, after[waiting.pk].failures) == (1, 0)
    items = rows(ctx)
    done = [ItemStatus.COMPLETED] * 2
    held = [ItemStatus.SUBMITTED] * 2
    assert [items[f"item-{i}"].status for i in range(10)] == [*held, *held, *done, *held, *done]


def test_a_batch_whose_every_line_failed_has_only_an_error_file(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    emu.faults.line_fault = lambda cid, body: "rate_limit"
    ctx = ended(runner, emu, job(emu, 3), "all-failed")
    batch = the_batch(ctx)
    assert (batch.output_file_id, batch.error_file_id is not None) == (None, True)
    assert collect(ctx) == 1
    for r in rows(ctx).values():
        assert (r.status, r.attempts, r.error_class) == (ItemStatus.PENDING, 1, "rate_limited")
        assert (r.error_message or "").startswith("HTTP 429: Rate limit reached for gpt-4.1-mini")
    assert emu.stats.calls[CONTENT] == 1


def _cut_after_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Outcomes applied 500 at a time; returns how many items make a file (about 2.5 MB)
    whose first half, sent before the emulator cuts it, holds a whole 1 MB download chunk:
    some chunks of outcomes are applied before the cut."""
    monkeypatch.setattr("batchor.engine.feed.CHUNK", 500)
    return 3_000


@pytest.mark.parametrize("keep", [True, False])
def test_a_download_cut_half_way_is_postponed_and_the_next_applies_the_rest_once(
    tmp_path: Path,
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    keep: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = _cut_after_chunks(monkeypatch)
    billed = count_billed(emu)
    emu.faults.content_cut_count = 1
    ctx = ended(runner, emu, job(emu, n, keep_raw_outputs=keep), "cut")
    assert collect(ctx) == 0
    batch = the_batch(ctx)
    assert (batch.status, batch.failures) == (BatchStatus.ENDED, 1)
    statuses = [r.status for r in ctx.store.item_rows(ctx.run.pk, 0, n)]
    assert 0 < statuses.count(ItemStatus.COMPLETED) < n  # applied as it arrived
    folder = tmp_path / "artifacts/runs/cut/batches/000000"
    assert not (folder / "output.jsonl").exists()  # only a whole file is kept
    forge_batch(runner.store, batch.pk, not_before=time.time() - 1)
    assert collect(ctx) == 1
    items = ctx.store.item_rows(ctx.run.pk, 0, n)
    assert len(items) == n
    assert {(r.status, r.attempts) for r in items} == {(ItemStatus.COMPLETED, 1)}
    record = run_record(ctx)
    assert [record.input_tokens, record.output_tokens] == billed
    assert (folder / "output.jsonl").exists() is keep
    assert emu.stats.calls[CONTENT] == 2


def test_without_kept_raw_outputs_a_result_file_is_never_written(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ended(runner, emu, job(emu, 3, keep_raw_outputs=False), "unwritten")
    written: list[str] = []
    open_write = ctx.artifacts.open_write
    monkeypatch.setattr(
        ctx.artifacts, "open_write", lambda key: written.append(key) or open_write(key)
    )
    assert collect(ctx) == 1
    assert {r.status for r in rows(ctx).values()} == {ItemStatus.COMPLETED}
    assert written == []


def test_a_download_retried_after_a_cut_applies_each_line_once_in_one_collection(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = _cut_after_chunks(monkeypatch)
    billed = count_billed(emu)
    emu.faults.content_cut_count = 1
    ctx = ended(runner, emu, job(emu, n), "retried")
    retrying = OpenAITransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=1)
    ctx = make_context(runner, ctx.run, retrying, Sentiment)
    applied: list[tuple[int, int]] = []  # (downloads begun by then, outcomes)
    apply_outcomes = ctx.store.apply_outcomes

    def spy(run_pk: int, batch_pk: int, outcomes: Any, max_attempts: int) -> int:
        applied.append((emu.stats.calls[CONTENT], len(outcomes)))
        return apply_outcomes(run_pk, batch_pk, outcomes, max_attempts)

    monkeypatch.setattr(ctx.store, "apply_outcomes", spy)
    assert collect(ctx) == 1
    assert emu.stats.calls[CONTENT] == 2  # cut, then whole
    assert sum(count for download, count in applied if download == 1) > 0  # before the cut
    assert sum(count for _, count in applied) == n  # which the second attempt passed over
    items = ctx.store.item_rows(ctx.run.pk, 0, n)
    assert {(r.status, r.attempts) for r in items} == {(ItemStatus.COMPLETED, 1)}
    record = run_record(ctx)
    assert [record.input_tokens, record.output_tokens] == billed

"""Every value a provider returns or a source yields is storable on every backend: text with
NUL or any other code point round-trips unchanged, and a reply that cannot be stored fails
that one item instead of the batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor import (
    BatchItem,
    BatchJob,
    BatchRunner,
    ItemStatus,
    OpenAIProviderConfig,
    PromptParts,
    RetryPolicy,
    RunStatus,
)
from batchor.states import BatchStatus
from batchor.stores.base import BatchError, ItemOutcome, NewItem
from batchor.stores.open import open_store
from batchor.stores.schema import item_failures
from batchor.stores.sql import SqlStateStore
from batchor.stores.values import MARK, escape, unescape
from batchor.testing import OpenAIBatchEmulator

# Values that a UTF-8 text column cannot hold as they are, or that look escaped.
ODD = [
    "nul\x00char",
    "\x00",
    "\x00\x00lead and trail\x00",
    MARK,
    MARK + '"looks escaped"',
    "lone \ud800 surrogate",
    "\udfff",
    "emoji \U0001f600 and \u00e9 and \x00",
    "control \x01\x1f\x7f",
    "",
    "plain",
]


@pytest.mark.parametrize("value", ODD)
def test_escape_round_trips_and_is_storable_utf8(value: str) -> None:
    escaped = escape(value)
    assert "\x00" not in escaped
    escaped.encode()  # no lone surrogate left
    assert unescape(escaped) == value


def test_plain_values_are_stored_as_they_are() -> None:
    for value in ("plain", "é \U0001f600", "a\tb\nc", "\ufdd0 not at the start"[1:]):
        assert escape(value) is value
    assert unescape("\ufdd0not json") == "\ufdd0not json"


def _submitted_batch(store: SqlStateStore, ids: list[str]) -> tuple[int, int]:
    run, _ = store.create_run("r\x00un", {"k": "v\x00"}, "fp")
    new = [
        NewItem(i + 1, item_id, 0, i * 10, 10, "00000000", None, json.dumps({"m": item_id}))
        for i, item_id in enumerate(ids)
    ]
    assert store.add_items(
        run.pk, new, next_slice=1, ingested_count=len(new), checkpoint="cp\x00", complete=True
    )
    batch = store.record_batch(
        run.pk, "r\x00un/000000", "in\x00put", [1 + i for i in range(len(ids))], 1
    )
    assert batch is not None
    assert store.mark_submitted(batch.pk, "batch_\x00id", "in_progress")
    return run.pk, batch.pk


def _storable(store_url: str) -> list[str]:
    """The odd values a backend is given: on SQLite, all but lone surrogates, which SQLite's
    driver cannot encode and which nothing hands the store (sources refuse them, and a reply
    is parsed by a JSON reader that refuses them)."""
    if store_url.startswith("sqlite"):
        return [v for v in ODD if "\ud800" not in v and "\udfff" not in v]
    return ODD


def test_odd_text_round_trips_through_every_column(store_url: str) -> None:
    store = open_store(store_url)
    odd = _storable(store_url)
    ids = [f"id-{n}-{v}" for n, v in enumerate(odd)]
    run_pk, batch_pk = _submitted_batch(store, ids)
    half = len(odd) // 2
    outcomes = [
        ItemOutcome(1 + n, "completed", output_text=v, input_tokens=1, output_tokens=1)
        for n, v in enumerate(odd[:half])
    ] + [
        ItemOutcome(1 + n, "failed", error_class="provider_error", message=v)
        for n, v in enumerate(odd[half:], start=half)
    ]
    assert store.apply_outcomes(run_pk, batch_pk, outcomes, max_attempts=1) == len(odd)
    assert store.mark_ended(
        batch_pk,
        "failed",
        output_file_id=None,
        error_file_id=None,
        errors=[BatchError("e", "x\x00")],
    )
    store.set_run_status(run_pk, RunStatus.PAUSED, pause_reason="why\x00")

    run = store.get_run("r\x00un")
    assert run is not None
    assert (run.run_id, run.config, run.source_checkpoint, run.pause_reason) == (
        "r\x00un",
        {"k": "v\x00"},
        "cp\x00",
        "why\x00",
    )
    batch = store.get_batch(batch_pk)
    assert batch is not None
    assert (batch.batch_key, batch.input_artifact, batch.provider_batch_id, batch.errors) == (
        "r\x00un/000000",
        "in\x00put",
        "batch_\x00id",
        (("e", "x\x00"),),
    )
    rows = store.item_rows(run_pk, 0, 100)
    streamed = [r for page in store.stream_terminal_rows(run_pk, 5) for r in page]
    assert rows == streamed
    assert [r.item_id for r in rows] == ids
    assert [json.loads(r.metadata) for r in rows] == [{"m": i} for i in ids]
    assert [r.output_text for r in rows[:half]] == odd[:half]
    assert [r.error_message for r in rows[half:]] == odd[half:]
    with store.engine.connect() as conn:
        audit = conn.execute(
            sa.select(item_failures.c.message).order_by(item_failures.c.seq)
        ).scalars()
        assert list(audit) == odd[half:]
    store.close()


def test_a_duplicate_id_with_nul_is_named(store_url: str) -> None:
    from batchor.errors import DuplicateItemError

    store = open_store(store_url)
    run, _ = store.create_run("r", {}, "fp")
    item = NewItem(1, "du\x00p", 0, 0, 1, "0")
    assert store.add_items(
        run.pk, [item], next_slice=1, ingested_count=1, checkpoint=None, complete=False
    )
    with pytest.raises(DuplicateItemError) as caught:
        store.add_items(
            run.pk, [item._replace(seq=2)], next_slice=2, ingested_count=2,
            checkpoint=None, complete=True,
        )  # fmt: skip
    assert caught.value.item_id == "du\x00p"
    store.close()


def test_an_unstorable_reply_fails_only_its_item(store_url: str) -> None:
    """A value no backend column can take (a token count beyond any integer column) fails
    that item with the reason; the batch's other replies are recorded."""
    store = open_store(store_url)
    ids = [f"i{n}" for n in range(40)]
    run_pk, batch_pk = _submitted_batch(store, ids)
    outcomes = [
        ItemOutcome(seq, "completed", output_text=f"ok {seq}", input_tokens=3, output_tokens=4)
        for seq in range(1, 41)
    ]
    outcomes[12] = outcomes[12]._replace(input_tokens=10**30)
    outcomes[30] = outcomes[30]._replace(kind="retry", output_tokens=-(10**25), error_class="x")
    assert store.apply_outcomes(run_pk, batch_pk, outcomes, max_attempts=3) == 40
    rows = {r.seq: r for r in store.item_rows(run_pk, 0, 100)}
    bad = [seq for seq, r in rows.items() if r.status is not ItemStatus.COMPLETED]
    assert bad == [13, 31]
    for seq in bad:
        assert rows[seq].status is ItemStatus.FAILED
        assert rows[seq].error_class == "unstorable"
        assert "could not be stored" in (rows[seq].error_message or "")
    assert rows[1].output_text == "ok 1"
    # Applying the same lines again changes nothing (the guard still holds).
    assert store.apply_outcomes(run_pk, batch_pk, outcomes, max_attempts=3) == 0
    # The batch's totals, summed from the same lines, do not stop the run either.
    assert store.mark_ended(batch_pk, "completed", output_file_id=None, error_file_id=None)
    assert store.finish_batch(run_pk, batch_pk, 10**30, 5)
    assert store.get_batch(batch_pk).status is BatchStatus.COLLECTED  # type: ignore[union-attr]
    store.close()


def _text_job(emu: OpenAIBatchEmulator, items: list[BatchItem]) -> BatchJob:
    def build(item: BatchItem) -> PromptParts:
        return PromptParts(prompt=str(item.payload["text"]))

    return BatchJob(
        items=items,
        build_prompt=build,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        retry_policy=RetryPolicy(max_attempts=1),
    )


def test_a_run_with_nul_in_ids_prompts_and_replies_completes(
    store_url: str, tmp_path: Path
) -> None:
    """The emulator echoes the prompt in text mode, so a NUL in the prompt is a NUL in the
    reply; ids and metadata carry NUL too. Every item completes and reads back unchanged."""
    items = [
        BatchItem(item_id="u1", payload={"text": "nul\x00char"}, metadata={"m": "x\x00"}),
        BatchItem(item_id="u2", payload={"text": "ok"}),
        BatchItem(item_id="u\x003", payload={"text": "\x00"}),
    ]
    with (
        OpenAIBatchEmulator() as emu,
        BatchRunner(store=store_url, artifacts=tmp_path / "artifacts") as runner,
    ):
        run = runner.start(_text_job(emu, items), "nul-run")
        summary = run.wait(poll_interval=0.05, timeout=60)
        assert summary.status is RunStatus.COMPLETED
        got = {r.item_id: r for r in run.results()}
    assert set(got) == {"u1", "u2", "u\x003"}
    assert all(r.status is ItemStatus.COMPLETED for r in got.values())
    assert got["u1"].output_text == "Echo: nul\x00char"
    assert got["u\x003"].output_text == "Echo: \x00"
    assert got["u1"].metadata == {"m": "x\x00"}


def test_cancel_succeeds_on_a_run_whose_replies_hold_nul(store_url: str, tmp_path: Path) -> None:
    items = [BatchItem(item_id=f"c{i}", payload={"text": f"n\x00{i}"}) for i in range(3)]
    with (
        OpenAIBatchEmulator(phase_seconds=0.2) as emu,
        BatchRunner(store=store_url, artifacts=tmp_path / "artifacts") as runner,
    ):
        run = runner.start(_text_job(emu, items), "nul-cancel")
        run.refresh()  # submitted
        summary = run.cancel()
        for _ in range(400):
            if summary.is_terminal:
                break
            summary = run.refresh()
        assert summary.status is RunStatus.CANCELLED

"""The recovery paths of poll, cancel and ingest (engine/poll.py, cancel.py, ingest.py), each
driven against the emulator and a real SQLite store, and checked by the state it leaves:
batch and item statuses, provider statuses, errors, and the provider calls made.

The engine phases are called directly with a context whose provider has the SDK's retries
off (``max_retries=0``), so one injected HTTP fault is one failed call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    DuplicateItemError,
    ItemStatus,
    OpenAIProviderConfig,
    PromptParts,
    RunStatus,
)
from batchor.engine.cancel import wind_down
from batchor.engine.context import RunContext
from batchor.engine.poll import poll
from batchor.providers.base import ProviderBatch
from batchor.providers.openai.transport import OpenAITransport
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord
from batchor.testing import OpenAIBatchEmulator

from ..stores.forge import forge_batch
from .conftest import make_items, prompt
from .contexts import emulator_transport, make_context

BATCHES = ("POST", "/v1/batches")
LIST = ("GET", "/v1/batches")
RETRIEVE = ("GET", "/v1/batches/{id}")
CANCEL = ("POST", "/v1/batches/{id}/cancel")
DELETE = ("DELETE", "/v1/files/{id}")


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")


def config(emu: OpenAIBatchEmulator) -> OpenAIProviderConfig:
    return OpenAIProviderConfig(model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key)


def job_for(emu: OpenAIBatchEmulator, n: int = 6, max_requests: int = 50_000) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=config(emu),
        limits=BatchLimits(max_requests=max_requests),
    )


def context(
    runner: BatchRunner,
    run_id: str,
    emu: OpenAIBatchEmulator,
    provider: OpenAITransport | None = None,
) -> RunContext:
    """A fresh context on the run, as a worker builds it, with the SDK's retries off."""
    record = runner.store.get_run(run_id)
    assert record is not None
    return make_context(runner, record, provider or emulator_transport(emu))


def batches(runner: BatchRunner, run_id: str) -> list[BatchRecord]:
    record = runner.store.get_run(run_id)
    assert record is not None
    return runner.store.batches(record.pk, list(BatchStatus))


def items(runner: BatchRunner, run_id: str) -> dict[ItemStatus, int]:
    record = runner.store.get_run(run_id)
    assert record is not None
    return {s: n for s, n in runner.store.item_counts(record.pk).items() if n}


# ---- poll -------------------------------------------------------------------------------


@pytest.fixture
def slow_emulator() -> Iterator[OpenAIBatchEmulator]:
    """Batches stay in each provider phase for a while, so polls see them live."""
    with OpenAIBatchEmulator(phase_seconds=30.0) as emu:
        yield emu


def test_a_poll_that_fails_leaves_the_batch_submitted_for_the_next_poll(
    runner: BatchRunner, slow_emulator: OpenAIBatchEmulator
) -> None:
    emu = slow_emulator
    runner.start(job_for(emu), "poll-fails")
    [batch] = batches(runner, "poll-fails")
    assert batch.status is BatchStatus.SUBMITTED
    seen = batch.provider_status
    emu.stats.reset()
    emu.faults.http_server_error_count = 1
    ctx = context(runner, "poll-fails", emu)
    assert poll(ctx) == 0
    assert emu.stats.calls[RETRIEVE] == 1
    [after] = batches(runner, "poll-fails")
    assert after.status is BatchStatus.SUBMITTED  # polling never gives a batch up
    assert after.provider_status == seen
    assert after.errors == ()
    assert items(runner, "poll-fails") == {ItemStatus.SUBMITTED: 6}
    # The next poll reaches the provider again.
    assert poll(ctx) == 0
    assert emu.stats.calls[RETRIEVE] == 2


def test_a_poll_records_a_changed_provider_status_and_leaves_an_unchanged_one(
    runner: BatchRunner, slow_emulator: OpenAIBatchEmulator
) -> None:
    emu = slow_emulator
    runner.start(job_for(emu), "poll-status")
    [batch] = batches(runner, "poll-status")
    ctx = context(runner, "poll-status", emu)
    remote = ctx.transport.retrieve_batch(batch.provider_batch_id or "")
    # The store still holds the status seen at create; pretend it was something else.
    assert runner.store.record_provider_status(batch.pk, "old")
    before = runner.store.get_batch(batch.pk)
    assert before is not None
    assert poll(ctx) == 0
    after = runner.store.get_batch(batch.pk)
    assert after is not None
    assert after.provider_status == remote.status != "old"
    assert after.updated_at is not None
    assert before.updated_at is not None
    assert after.updated_at >= before.updated_at
    stamp = after.updated_at
    assert poll(ctx) == 0  # nothing changed: the row is not written
    again = runner.store.get_batch(batch.pk)
    assert again is not None
    assert again.updated_at == stamp
    assert again.provider_status == remote.status


class _RacedProvider(OpenAITransport):
    """A real transport whose first batch lookup lets another worker poll the run first, as
    a second process polling at the same moment would."""

    def __init__(self, emu: OpenAIBatchEmulator, other: RunContext) -> None:
        super().__init__(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
        self.other: RunContext | None = other

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        if self.other is not None:
            other, self.other = self.other, None
            assert poll(other) == 1
        return super().retrieve_batch(batch_id)


def test_a_batch_ended_by_another_worker_meanwhile_is_counted_once(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator() as emu:
        emu.faults.fail_batch_count = 1
        emu.faults.fail_batch_errors = [("invalid_request", "the file is malformed")]
        runner.start(job_for(emu), "poll-race")
        [batch] = batches(runner, "poll-race")
        assert batch.status is BatchStatus.SUBMITTED
        # The provider ends it; nobody has polled yet.
        probe = emulator_transport(emu)
        while not probe.retrieve_batch(batch.provider_batch_id or "").is_terminal:
            pass
        other = context(runner, "poll-race", emu)
        ctx = context(runner, "poll-race", emu, provider=_RacedProvider(emu, other))
        assert poll(ctx) == 0  # the other worker ended it first: counted there, not here
        [after] = batches(runner, "poll-race")
        assert after.status is BatchStatus.ENDED
        assert after.provider_status == "failed"
        assert after.errors == (("invalid_request", "the file is malformed"),)
        assert items(runner, "poll-race") == {ItemStatus.SUBMITTED: 6}  # collect's job


# ---- cancel -----------------------------------------------------------------------------


def _refused_create(runner: BatchRunner, emu: OpenAIBatchEmulator, run_id: str) -> RunContext:
    """Start a run whose one create is refused (HTTP 429): its batch stays uploaded, with a
    create attempted and no provider batch id."""
    emu.faults.create_rate_limit_count = 1
    runner.start(job_for(emu), run_id)
    [batch] = batches(runner, run_id)
    assert batch.status is BatchStatus.UPLOADED
    assert batch.create_started_at is not None
    assert batch.provider_batch_id is None
    assert batch.failures == 1
    assert emu.stats.batches_created == 0
    return context(runner, run_id, emu)


def _cancelling(ctx: RunContext, *, remote: bool = False) -> RunContext:
    assert ctx.store.request_cancel(ctx.run.pk, remote=remote)
    record = ctx.store.get_run(ctx.run.run_id)
    assert record is not None
    assert record.status is RunStatus.CANCELLING
    ctx.run = record
    return ctx


def test_cancel_adopts_a_batch_whose_create_reached_the_provider_unanswered(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator(phase_seconds=30.0) as emu:
        ctx = _cancelling(_refused_create(runner, emu, "cancel-adopt"))
        [batch] = batches(runner, "cancel-adopt")
        # The create did reach the provider after all; only its answer was lost.
        created = ctx.transport.create_batch(
            batch.file_id or "",
            ctx.codec.endpoint,
            {"batchor_run_id": "cancel-adopt", "batchor_batch_key": batch.batch_key},
        )
        emu.stats.reset()
        wind_down(ctx)
        [after] = batches(runner, "cancel-adopt")
        assert after.status is BatchStatus.SUBMITTED  # adopted, not dropped
        assert after.provider_batch_id == created.id
        assert items(runner, "cancel-adopt") == {ItemStatus.SUBMITTED: 6}
        assert emu.stats.calls[LIST] >= 1
        assert emu.stats.calls[DELETE] == 0  # its input file is the provider batch's
        assert emu.stats.batches_created == 0
        assert emu.stats.calls[CANCEL] == 0  # no remote cancel asked


def test_cancel_drops_a_batch_whose_create_never_reached_the_provider(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator() as emu:
        ctx = _cancelling(_refused_create(runner, emu, "cancel-drop"))
        emu.stats.reset()
        wind_down(ctx)
        [after] = batches(runner, "cancel-drop")
        assert after.status is BatchStatus.COLLECTED
        assert after.provider_batch_id is None
        assert items(runner, "cancel-drop") == {ItemStatus.CANCELLED: 6}
        assert emu.stats.calls[LIST] >= 1  # looked it up first
        assert emu.stats.calls[DELETE] == 1  # its uploaded input deleted
        assert emu.stats.batches_created == 0
        assert [f for f in emu.files() if f["purpose"] == "batch"] == []


def test_a_cancel_step_whose_lookup_fails_is_postponed_and_the_next_one_drops(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator() as emu:
        ctx = _cancelling(_refused_create(runner, emu, "cancel-later"))
        emu.faults.http_server_error_count = 1  # the lookup's listing fails
        emu.stats.reset()
        wind_down(ctx)
        [after] = batches(runner, "cancel-later")
        assert after.status is BatchStatus.UPLOADED  # untouched, to be tried again
        assert items(runner, "cancel-later") == {ItemStatus.QUEUED: 6}
        assert emu.stats.calls[DELETE] == 0
        wind_down(ctx)
        [dropped] = batches(runner, "cancel-later")
        assert dropped.status is BatchStatus.COLLECTED
        assert items(runner, "cancel-later") == {ItemStatus.CANCELLED: 6}
        assert emu.stats.calls[DELETE] == 1


def test_cancel_drops_a_batch_never_uploaded_without_touching_the_provider(
    runner: BatchRunner,
) -> None:
    from batchor.engine.ingest import ingest, positions
    from batchor.engine.pack import pack

    with OpenAIBatchEmulator() as emu:
        ctx = _bare_run(runner, "cancel-prepared")
        ingest(ctx, positions(make_items(6)), prompt)
        ctx = context(runner, "cancel-prepared", emu)
        assert pack(ctx) == 1  # packed, never sent
        [batch] = batches(runner, "cancel-prepared")
        assert batch.status is BatchStatus.PREPARED
        assert batch.file_id is None
        ctx = _cancelling(ctx)
        wind_down(ctx)
        [after] = batches(runner, "cancel-prepared")
        assert after.status is BatchStatus.COLLECTED
        assert after.provider_status == "not_sent"
        assert items(runner, "cancel-prepared") == {ItemStatus.CANCELLED: 6}
        assert emu.stats.total_calls == 0  # no create was ever attempted: no lookup either


def test_cancel_keeps_a_batch_another_worker_started_creating_meanwhile(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator() as emu:
        ctx = _cancelling(_refused_create(runner, emu, "cancel-claimed"))
        [batch] = batches(runner, "cancel-claimed")

        class Claiming(OpenAITransport):
            """While this worker looks the batch up, another one starts creating it."""

            def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
                assert forge_batch(
                    runner.store,
                    batch.pk,
                    create_started_at=(batch.create_started_at or 0) + 1,
                    claimed_by="other-host:1:1",
                )
                return super().list_batches(created_after)

        ctx.transport = Claiming(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
        emu.stats.reset()
        wind_down(ctx)
        [after] = batches(runner, "cancel-claimed")
        assert after.status is BatchStatus.UPLOADED  # the other worker's claim wins
        assert after.claimed_by == "other-host:1:1"
        assert items(runner, "cancel-claimed") == {ItemStatus.QUEUED: 6}
        assert emu.stats.calls[DELETE] == 0


def test_a_remote_cancel_stops_live_batches_once_and_skips_stopping_ones(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator(phase_seconds=30.0) as emu:
        runner.start(job_for(emu, n=6, max_requests=3), "cancel-remote")
        live = batches(runner, "cancel-remote")
        assert [b.status for b in live] == [BatchStatus.SUBMITTED] * 2
        ctx = _cancelling(context(runner, "cancel-remote", emu), remote=True)
        emu.stats.reset()
        wind_down(ctx)
        assert emu.stats.calls[CANCEL] == 2
        after = batches(runner, "cancel-remote")
        assert {b.provider_status for b in after} <= {"cancelling", "cancelled"}
        assert all(b.status is BatchStatus.SUBMITTED for b in after)  # collected later
        wind_down(ctx)
        assert emu.stats.calls[CANCEL] == 2  # already stopping: not asked again


def test_a_remote_cancel_the_provider_refuses_leaves_the_batch_to_be_collected(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(job_for(emu), "cancel-refused")
        [batch] = batches(runner, "cancel-refused")
        probe = emulator_transport(emu)
        while not probe.retrieve_batch(batch.provider_batch_id or "").is_terminal:
            pass
        ctx = _cancelling(context(runner, "cancel-refused", emu), remote=True)
        [batch] = batches(runner, "cancel-refused")
        assert batch.status is BatchStatus.SUBMITTED  # not polled yet
        emu.stats.reset()
        wind_down(ctx)  # the provider refuses to cancel a completed batch
        assert emu.stats.calls[CANCEL] == 1
        [after] = batches(runner, "cancel-refused")
        assert after.status is BatchStatus.SUBMITTED
        assert after.provider_status == batch.provider_status  # not rewritten
        final = run.wait(poll_interval=0.01)
        assert final.status is RunStatus.CANCELLED
        assert items(runner, "cancel-refused") == {ItemStatus.COMPLETED: 6}


def test_a_local_cancel_never_asks_the_provider_to_stop(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(phase_seconds=30.0) as emu:
        runner.start(job_for(emu), "cancel-local-only")
        ctx = _cancelling(context(runner, "cancel-local-only", emu), remote=False)
        emu.stats.reset()
        wind_down(ctx)
        assert emu.stats.total_calls == 0
        [after] = batches(runner, "cancel-local-only")
        assert after.status is BatchStatus.SUBMITTED


# ---- ingest -----------------------------------------------------------------------------


def _bare_run(runner: BatchRunner, run_id: str) -> RunContext:
    """A run created in the store with nothing ingested, and a context on it (ingestion
    never calls the provider)."""
    cfg = {
        "endpoint": "/v1/responses",
        "model": "gpt-4.1-mini",
        "max_attempts": 3,
        "max_requests": 100,
        "max_bytes": 1_000_000,
    }
    record, created = runner.store.create_run(run_id, cfg, "fp")
    assert created
    return make_context(runner, record, OpenAITransport())


def _codec() -> Any:
    return OpenAIProviderConfig(model="gpt-4.1-mini").codec(None)


def test_a_slice_another_worker_recorded_first_is_left_to_it(runner: BatchRunner) -> None:
    from batchor.engine.ingest import ingest, positions

    first = _bare_run(runner, "ingest-race")
    stale = RunContext(**{f: getattr(first, f) for f in RunContext.__dataclass_fields__})
    progress: list[int] = []
    assert ingest(first, positions(make_items(5)), prompt, slice_size=2) == 5
    # A second worker that read the run before the first one ingested anything.
    accepted = ingest(
        stale,
        positions(make_items(5)),
        prompt,
        slice_size=2,
        on_progress=progress.append,
    )
    assert accepted == 0
    assert progress == []  # it recorded nothing
    record = runner.store.get_run("ingest-race")
    assert record is not None
    assert record.ingested_count == 5
    assert record.next_slice == 3
    assert record.ingest_complete
    # The first worker's items, born in the batch its plan cut; the second left no batch.
    assert items(runner, "ingest-race") == {ItemStatus.QUEUED: 5}
    assert first.plan is not None
    (cut,) = first.plan.cuts
    (batch,) = runner.store.batches(record.pk, list(BatchStatus))
    assert (batch.pk, batch.status, batch.request_count) == (cut.batch_pk, "forming", 5)


def test_ingest_reports_progress_after_each_slice_it_records(runner: BatchRunner) -> None:
    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-progress")
    progress: list[int] = []
    accepted = ingest(
        ctx,
        positions(make_items(5)),
        prompt,
        slice_size=2,
        on_progress=progress.append,
    )
    assert accepted == 5
    assert progress == [2, 4, 5]
    keys = sorted(runner.artifacts.keys("runs/ingest-progress/requests"))
    assert len(keys) == 3


def test_slices_are_recorded_on_a_thread_of_their_own_progress_reported_on_the_callers(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import threading

    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-threads")
    recorders: set[str] = set()
    add_items = runner.store.add_items

    def spy(*args: Any, **kw: Any) -> bool:
        recorders.add(threading.current_thread().name)
        return add_items(*args, **kw)

    monkeypatch.setattr(runner.store, "add_items", spy)
    progress: list[tuple[int, str]] = []
    switch = sys.getswitchinterval()
    accepted = ingest(
        ctx,
        positions(make_items(7)),
        prompt,
        slice_size=2,
        on_progress=lambda n: progress.append((n, threading.current_thread().name)),
    )
    assert accepted == 7
    assert [n for n, _ in progress] == [2, 4, 6, 7]
    assert {name for _, name in progress} == {threading.current_thread().name}
    assert len(recorders) == 1
    assert recorders != {threading.current_thread().name}
    assert sys.getswitchinterval() == switch  # shortened only while slices were recorded
    assert items(runner, "ingest-threads") == {ItemStatus.QUEUED: 7}


def test_a_switch_interval_the_application_sets_during_ingestion_is_kept(
    runner: BatchRunner,
) -> None:
    import sys

    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-own-switch")
    before = sys.getswitchinterval()
    seen: list[float] = []

    def own_interval(item: BatchItem) -> PromptParts:
        seen.append(sys.getswitchinterval())
        if item.item_id == "item-3":
            sys.setswitchinterval(0.002)  # the application's own, set mid-ingest
        return prompt(item)

    try:
        assert ingest(ctx, positions(make_items(7)), own_interval, slice_size=2) == 7
        assert min(seen) < before  # shortened while slices were recorded ...
        assert sys.getswitchinterval() == pytest.approx(0.002)  # ... and the app's kept
    finally:
        sys.setswitchinterval(before)


def test_a_source_error_while_a_slice_is_recorded_keeps_that_slice_and_records_no_more(
    runner: BatchRunner,
) -> None:
    from batchor import SourceError
    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-bad-row")

    def source() -> Iterator[BatchItem]:
        yield from make_items(5)
        raise SourceError("row 6 of the source is broken")

    with pytest.raises(SourceError, match="row 6"):
        ingest(ctx, positions(source()), prompt, slice_size=2)
    record = runner.store.get_run("ingest-bad-row")
    assert record is not None
    # Slices [1, 2] and [3, 4] were read whole and recorded; item 5 never was.
    assert (record.ingested_count, record.ingest_complete) == (4, False)
    assert sum(items(runner, "ingest-bad-row").values()) == 4


def test_a_slice_refused_by_the_store_stops_ingestion_with_the_store_s_error(
    runner: BatchRunner,
) -> None:
    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-dupe")
    given = make_items(3) + make_items(1) + make_items(4, prefix="later")
    with pytest.raises(DuplicateItemError, match="item 4 of the source repeats an earlier item"):
        ingest(ctx, positions(given), prompt, slice_size=3)
    record = runner.store.get_run("ingest-dupe")
    assert record is not None
    assert record.ingested_count == 3  # the slice after the refused one was not recorded
    assert sum(items(runner, "ingest-dupe").values()) == 3


def test_a_slice_failing_while_the_source_fails_too_is_logged_not_lost(
    runner: BatchRunner, caplog: pytest.LogCaptureFixture
) -> None:
    from batchor import SourceError
    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-both-fail")

    def source() -> Iterator[BatchItem]:
        yield from make_items(3) + make_items(1) + make_items(2, prefix="later")
        raise SourceError("row 7 of the source is broken")

    with pytest.raises(SourceError, match="row 7"):
        ingest(ctx, positions(source()), prompt, slice_size=3)
    assert (
        "run ingest-both-fail: recording the slice before the error failed too: "
        "DuplicateItemError: duplicate item_id 'item-0': item 4 of the source repeats an "
        "earlier item"
    ) in caplog.messages
    record = runner.store.get_run("ingest-both-fail")
    assert record is not None
    assert record.ingested_count == 3


def test_build_prompt_must_return_prompt_parts(runner: BatchRunner) -> None:
    from batchor import ConfigurationError
    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-bad-prompt")

    def text_only(item: BatchItem) -> Any:
        return str(item.payload["text"])

    with pytest.raises(
        ConfigurationError, match="build_prompt must return PromptParts, got str for item 'item-0'"
    ):
        ingest(ctx, positions(make_items(2)), text_only)
    assert items(runner, "ingest-bad-prompt") == {}


def test_metadata_that_is_not_json_is_refused_naming_the_item(runner: BatchRunner) -> None:
    from batchor import SourceError
    from batchor.engine.ingest import ingest, positions

    ctx = _bare_run(runner, "ingest-bad-metadata")
    bad = BatchItem(item_id="odd", payload={"text": "x"}, metadata={"when": object()})
    with pytest.raises(SourceError, match="metadata of item 'odd' is not JSON-serialisable"):
        ingest(ctx, positions([*make_items(2), bad]), prompt)
    assert items(runner, "ingest-bad-metadata") == {}


def test_a_plain_iterable_must_yield_batch_items(runner: BatchRunner) -> None:
    from batchor import SourceError
    from batchor.engine.ingest import positions

    stream = positions([*make_items(1), {"item_id": "x"}])  # type: ignore[list-item]
    assert next(stream)[1] is None
    with pytest.raises(SourceError, match="must yield BatchItem objects, got dict"):
        next(stream)


def test_the_prompt_fingerprint_covers_only_the_first_items() -> None:
    from batchor.engine.ingest import PROMPT_FINGERPRINT_ITEMS, prompt_fingerprint

    head = make_items(PROMPT_FINGERPRINT_ITEMS)
    tail = make_items(3, prefix="later", text="something else {i}")
    base = prompt_fingerprint(head, prompt, _codec())
    assert prompt_fingerprint([*head, *tail], prompt, _codec()) == base
    changed = [*head[:-1], BatchItem(item_id=head[-1].item_id, payload={"text": "other"})]
    assert prompt_fingerprint(changed, prompt, _codec()) != base

    def other_prompt(item: BatchItem) -> PromptParts:
        return PromptParts(prompt=str(item.payload["text"]), system="Something else.")

    assert prompt_fingerprint(head, other_prompt, _codec()) != base


# ---- token estimates --------------------------------------------------------------------


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """providers.openai.tokens with its cached counter forgotten before and after, and any download
    tiktoken might try sent to a closed port (batchor never downloads an encoding)."""
    from batchor.providers.openai import tokens as module

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    module._counter.cache_clear()
    yield module
    module._counter.cache_clear()


def _encoding_file(directory: Path) -> Path:
    import hashlib

    from batchor.providers.openai.tokens import _ENCODING_URL

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha1(_ENCODING_URL.encode()).hexdigest()
    path.write_bytes(b"not an encoding\n")
    return path


def test_without_a_cached_encoding_a_token_is_four_characters(
    tokens: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    assert tokens._counter() is None
    framing = 8
    assert tokens.estimate_tokens(PromptParts(prompt="")) == framing
    assert tokens.estimate_tokens(PromptParts(prompt="abcd")) == 1 + framing
    assert tokens.estimate_tokens(PromptParts(prompt="abcde")) == 2 + framing  # rounded up
    # The system text counts too, joined to the prompt by a newline: 3 + 1 + 4 characters.
    assert tokens.estimate_tokens(PromptParts(prompt="abcd", system="xyz")) == 2 + framing
    assert tokens.estimate_tokens(PromptParts(prompt="abcd", system="xy")) == 2 + framing
    assert tokens.estimate_tokens(PromptParts(prompt="abc", system="xy")) == 2 + framing
    assert tokens.estimate_tokens(PromptParts(prompt="ab", system="x")) == 1 + framing


def test_without_tiktoken_the_rule_of_thumb_is_used(
    tokens: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as if it were not installed
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    cached = _encoding_file(tmp_path / "cache")
    assert tokens._counter() is None
    assert cached.exists()  # never looked at
    assert tokens.estimate_tokens(PromptParts(prompt="abcdefghi")) == 3 + 8


@pytest.mark.parametrize("variable", ["TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", None])
def test_an_unusable_cached_encoding_falls_back_to_the_rule_of_thumb(
    tokens: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    import tempfile

    if variable is None:  # tiktoken's default cache, under the temporary directory
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        cached = _encoding_file(tmp_path / "tmp" / "data-gym-cache")
    else:
        monkeypatch.setenv(variable, str(tmp_path / "cache"))
        cached = _encoding_file(tmp_path / "cache")
    assert tokens._counter() is None
    assert not cached.exists()  # tiktoken read it, found it corrupt and dropped it
    assert tokens.estimate_tokens(PromptParts(prompt="abcdefgh")) == 2 + 8


def test_an_empty_cache_setting_means_no_cache(
    tokens: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", "")
    cached = _encoding_file(Path.cwd())  # where a relative lookup would find one
    assert tokens._counter() is None
    assert cached.exists()  # never looked at


# ---- backoff ----------------------------------------------------------------------------


def test_a_backoff_given_its_own_base_and_cap_keeps_to_them() -> None:
    from batchor.engine.backoff import BASE_SECONDS, CAP_SECONDS, backoff_delay

    # The capacity backoff of collect passes its own; these differ from the defaults.
    assert (BASE_SECONDS, CAP_SECONDS) != (1.0, 5.0)
    delays = [backoff_delay(failures, base=1.0, cap=5.0) for failures in range(1, 12)]
    assert all(0.5 <= d <= 5.0 for d in delays)
    assert all(2.5 <= d <= 5.0 for d in delays[3:])  # 1, 2, 4, then capped at 5
    assert 0.5 <= backoff_delay(1, base=1.0, cap=5.0) <= 1.0
    assert 0.5 <= backoff_delay(0, base=1.0, cap=5.0) <= 1.0  # never below the first step

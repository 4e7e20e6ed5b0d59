"""Every recovery path of `batchor.engine.submit`, one engine call at a time: a real store,
real artifacts and the emulator over HTTP, the provider's own retries off (each fault is
seen by the engine), and an injected clock where time must pass. Each test pins the
resulting batch and item rows, the provider calls made and what was logged."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from openai import OpenAI

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    BatchStatus,
    ItemStatus,
    OpenAIProviderConfig,
    PromptParts,
    RunStateError,
    RunStatus,
)
from batchor.engine import lookup as lookup_module
from batchor.engine import submit as submit_module
from batchor.engine.claims import owner
from batchor.engine.context import RunContext
from batchor.engine.pack import manifest_key, pack
from batchor.engine.plan import drop_plan
from batchor.engine.submit import submit
from batchor.stores.base import BatchRecord, ItemRow
from batchor.testing import EmulatorLimits, OpenAIBatchEmulator

from ..stores.forge import forge_batch
from .contexts import emulator_transport, make_context

LIST = ("GET", "/v1/batches")
CREATE = ("POST", "/v1/batches")
UPLOAD = ("POST", "/v1/files")
FIND = ("GET", "/v1/files")
DELETE = ("DELETE", "/v1/files/{id}")
RUN = "batchor_run_id"
KEY = "batchor_batch_key"
SHA = "batchor_input_sha256"
HOST = owner().rsplit(":", 2)[0]
# The injected clock starts an hour ahead, on a whole second (exact sums below).
T0 = float(int(time.time()) + 3600)

# ---- scaffolding (shared with test_pack_paths) --------------------------------------------


class Clock:
    """Stands in for the ``time`` module in `batchor.engine.submit` (its one clock)."""

    def __init__(self) -> None:
        self.now: float | None = None

    def time(self) -> float:
        return time.time() if self.now is None else self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(submit_module, "time", fake)
    monkeypatch.setattr(lookup_module, "time", fake)
    return fake


@pytest.fixture
def emu() -> Iterator[OpenAIBatchEmulator]:
    # Each phase of a batch takes a moment, so a cancel lands before it completes.
    with OpenAIBatchEmulator(phase_seconds=0.2) as emulator:
        yield emulator


def client(emu: OpenAIBatchEmulator) -> OpenAI:
    return OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)


def provider_config(
    emu: OpenAIBatchEmulator, token_limit: int | None = None
) -> OpenAIProviderConfig:
    return OpenAIProviderConfig(
        model="gpt-4.1-mini",
        base_url=emu.base_url,
        api_key=emu.api_key,
        enqueued_token_limit=token_limit,
    )


def ingested(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    run_id: str = "r",
    *,
    n: int = 4,
    max_requests: int = 2,
    token_limit: int | None = None,
    texts: list[str] | None = None,
) -> RunContext:
    """A running run whose items are ingested and pending, nothing packed or sent, and a
    context to drive it with the provider's own retries off."""
    texts = texts or [f"review number {k}" for k in range(n)]
    job = BatchJob(
        items=[BatchItem(item_id=f"i{k}", payload={"text": t}) for k, t in enumerate(texts)],
        build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
        provider_config=provider_config(emu, token_limit),
        limits=BatchLimits(max_requests=max_requests),
    )

    def hold(_: int) -> None:  # stop the start's own packing and submitting
        record = runner.store.get_run(run_id)
        assert record is not None
        runner.store.set_run_status(record.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING])

    started = runner.start(job, run_id, on_ingest=hold)
    drop_plan(started._ctx)  # its items were born in the batches it cut: pending again
    record = runner.store.get_run(run_id)
    assert record is not None
    assert record.ingest_complete
    runner.store.set_run_status(record.pk, RunStatus.RUNNING, expected=[RunStatus.PAUSED])
    record = runner.store.get_run(run_id)
    assert record is not None
    return make_context(runner, record, emulator_transport(emu))


def prepared(runner: BatchRunner, emu: OpenAIBatchEmulator, **kwargs: Any) -> RunContext:
    """`ingested`, then packed into prepared batches (no provider call yet)."""
    ctx = ingested(runner, emu, **kwargs)
    assert pack(ctx) > 0
    emu.stats.reset()
    return ctx


def reload(ctx: RunContext) -> None:
    record = ctx.store.get_run(ctx.run.run_id)
    assert record is not None
    ctx.run = record


def all_batches(ctx: RunContext) -> list[BatchRecord]:
    return sorted(ctx.store.batches(ctx.run.pk, list(BatchStatus)), key=lambda b: b.batch_key)


def batch(ctx: RunContext, number: int = 0) -> BatchRecord:
    (found,) = [b for b in all_batches(ctx) if b.batch_key == f"{ctx.run.run_id}/{number:06d}"]
    return found


def item_rows(ctx: RunContext) -> list[ItemRow]:
    return ctx.store.item_rows(ctx.run.pk, 0, 10_000)


def calls(emu: OpenAIBatchEmulator) -> dict[tuple[str, str], int]:
    return {k: v for k, v in emu.stats.calls.items() if v}


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "batchor"]


def input_bytes(ctx: RunContext, record: BatchRecord) -> bytes:
    with ctx.artifacts.open_read(record.input_artifact) as fh:
        return fh.read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote_batches(emu: OpenAIBatchEmulator) -> dict[str, dict[str, Any]]:
    return {b["id"]: b for b in emu.batches()}


def place(
    emu: OpenAIBatchEmulator,
    metadata: dict[str, str],
    content: bytes | None = None,
    *,
    status: str | None = None,
) -> str:
    """Create a provider batch as an earlier life (or another tool) would have; returns its
    id, once it has reached ``status`` if given."""
    c = client(emu)
    content = content or (
        b'{"custom_id":"1","method":"POST","url":"/v1/responses",'
        b'"body":{"model":"gpt-4.1-mini","input":"hi"}}\n'
    )
    upload = c.files.create(file=("earlier.jsonl", content), purpose="batch")
    if status == "failed":
        emu.faults.fail_token_limit_count = 1
    created = c.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/responses",
        completion_window="24h",
        metadata=metadata,
    )
    if status == "cancelled":
        c.batches.cancel(created.id)
    deadline = time.monotonic() + 20
    while status is not None and c.batches.retrieve(created.id).status != status:
        assert time.monotonic() < deadline, c.batches.retrieve(created.id).status
        time.sleep(0.02)
    return created.id


def claimed_elsewhere(ctx: RunContext, claimant: str, started: float) -> BatchRecord:
    """Make batch 0 look uploaded with a create started at ``started`` by ``claimant``: a
    first create attempt fails transiently, then the claim is rewritten as another worker's
    would be."""
    assert forge_batch(
        ctx.store,
        batch(ctx).pk,
        create_started_at=started,
        claimed_by=claimant,
        not_before=None,
    )
    return batch(ctx)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- the plain path ------------------------------------------------------------------------


def test_each_prepared_batch_is_uploaded_and_created_after_one_listing(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    clock.now = time.time()
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert submit(ctx) == 2
    assert calls(emu) == {LIST: 1, FIND: 2, UPLOAD: 2, CREATE: 2}
    remote = remote_batches(emu)
    for number, record in enumerate(all_batches(ctx)):
        assert record.status is BatchStatus.SUBMITTED
        assert record.provider_batch_id in remote
        assert record.provider_status == "validating"
        assert record.create_started_at == clock.now
        assert record.claimed_by == owner()
        assert (record.failures, record.not_before) == (0, None)
        sent = remote[record.provider_batch_id]
        key = f"r/{number:06d}"
        assert sent["metadata"] == {RUN: "r", KEY: key, SHA: sha(input_bytes(ctx, record))}
        assert sent["input_file_id"] == record.file_id
    names = {f["id"]: f["filename"] for f in emu.files()}
    assert sorted(names[b.file_id] for b in all_batches(ctx) if b.file_id) == [
        f"batchor-r-{n:06d}-{sha(input_bytes(ctx, b))[:16]}.jsonl"
        for n, b in enumerate(all_batches(ctx))
    ]
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.SUBMITTED}
    ids = [b.provider_batch_id for b in all_batches(ctx)]
    assert logged(caplog) == [
        ("INFO", "run r: 0 provider batches of this run in the last 26 h"),
        ("INFO", f"batch r/000000: created provider batch {ids[0]}"),
        ("INFO", f"batch r/000001: created provider batch {ids[1]}"),
    ]
    emu.stats.reset()
    assert submit(ctx) == 0  # nothing left to send
    assert calls(emu) == {}


def test_upload_filename_flattens_the_batch_key_and_carries_the_checksum() -> None:
    digest = "0123456789abcdef" + "f" * 48
    assert (
        submit_module.upload_filename("run-1/000007", digest)
        == "batchor-run-1-000007-0123456789abcdef.jsonl"
    )
    assert submit_module.upload_filename("run-1/000007", None) == "batchor-run-1-000007.jsonl"


# ---- transient errors: the batch waits where it is, the pass goes on ----------------------


@pytest.mark.parametrize(
    "route",
    ["GET /v1/batches", "GET /v1/files", "POST /v1/files"],
    ids=["listing", "finding-uploads", "upload"],
)
def test_a_transient_error_before_the_upload_leaves_the_batch_prepared_backing_off(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    route: str,
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    clock.now = T0
    emu.faults.route_server_error_counts[route] = 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="batchor"):
        assert submit(ctx) == 1  # the second batch still goes
    first, second = all_batches(ctx)
    assert first.status is BatchStatus.PREPARED
    assert (first.file_id, first.create_started_at, first.provider_batch_id) == (None, None, None)
    assert first.failures == 1
    assert first.not_before is not None
    assert T0 + 0.025 <= first.not_before <= T0 + 0.05
    assert second.status is BatchStatus.SUBMITTED
    expected = {LIST: 1, FIND: 2, UPLOAD: 2, CREATE: 1}
    if route == "GET /v1/batches":
        expected[LIST] = 2  # the failed listing is taken again for the next batch
        expected[FIND] = expected[UPLOAD] = 1
    elif route == "GET /v1/files":
        expected[UPLOAD] = 1
    assert calls(emu) == expected
    assert [s for s, _ in item_rows_by_batch(ctx)] == ["queued", "queued", "submitted", "submitted"]
    ((level, message),) = logged(caplog)
    assert level == "WARNING"
    assert message.startswith(
        "batch r/000000: submission postponed 0 s: provider answered HTTP 500"
    )
    # Still backing off: left alone, nothing called.
    emu.stats.reset()
    clock.now = first.not_before - 0.001
    assert submit(ctx) == 0
    assert calls(emu) == {}
    # Failing again backs off longer, counting on from the first failure.
    clock.now = first.not_before
    emu.faults.route_server_error_counts[route] = 1
    ctx.remote_batches = None  # a new context: the listing is taken again
    assert submit(ctx) == 0
    again = batch(ctx)
    assert (again.status, again.failures) == (BatchStatus.PREPARED, 2)
    assert again.not_before is not None
    assert first.not_before + 0.05 <= again.not_before <= first.not_before + 0.1
    # Exactly when the backoff ends, it goes.
    emu.stats.reset()
    clock.now = again.not_before
    assert submit(ctx) == 1
    done = batch(ctx)
    assert (done.status, done.failures, done.not_before) == (BatchStatus.SUBMITTED, 0, None)
    assert calls(emu)[CREATE] == 1
    assert emu.stats.batches_by_metadata(KEY) == Counter({"r/000000": 1})


def item_rows_by_batch(ctx: RunContext) -> list[tuple[str, int]]:
    return [(row.status.value, row.seq) for row in item_rows(ctx)]


def test_a_batch_backing_off_is_passed_over_and_the_next_one_sent(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    assert forge_batch(ctx.store, batch(ctx).pk, not_before=T0 + 60)
    waiting = batch(ctx)
    clock.now = T0
    assert submit(ctx) == 1
    assert batch(ctx) == waiting
    assert batch(ctx, 1).status is BatchStatus.SUBMITTED
    assert calls(emu) == {LIST: 1, FIND: 1, UPLOAD: 1, CREATE: 1}


def test_a_transient_create_error_leaves_the_batch_uploaded_and_its_own_claim_retries_at_once(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    clock.now = T0
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="batchor"):
        assert submit(ctx) == 1
    first, second = all_batches(ctx)
    assert first.status is BatchStatus.UPLOADED
    assert first.file_id is not None
    assert first.provider_batch_id is None
    assert (first.create_started_at, first.claimed_by) == (T0, owner())
    assert first.failures == 1
    assert first.not_before is not None
    assert T0 + 0.025 <= first.not_before <= T0 + 0.05
    assert second.status is BatchStatus.SUBMITTED
    assert calls(emu) == {LIST: 1, FIND: 2, UPLOAD: 2, CREATE: 2}
    assert emu.stats.batches_created == 1
    ((level, message),) = logged(caplog)
    assert level == "WARNING"
    assert message.startswith(
        "batch r/000000: submission postponed 0 s: provider answered HTTP 500"
    )
    # Its own earlier attempt has returned: after a look for it, created at once (no lease).
    emu.stats.reset()
    clock.now = first.not_before
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, CREATE: 1}
    done = batch(ctx)
    assert (done.status, done.failures, done.not_before) == (BatchStatus.SUBMITTED, 0, None)
    assert done.create_started_at == first.not_before
    assert done.file_id == first.file_id
    assert set(emu.stats.batches_by_metadata(KEY).values()) == {1}


def test_a_quota_refusal_pauses_the_run_and_stops_the_pass(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    clock.now = T0
    emu.faults.create_insufficient_quota_count = 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="batchor"):
        assert submit(ctx) == 0
    first, second = all_batches(ctx)
    assert first.status is BatchStatus.UPLOADED
    assert (first.failures, first.not_before, first.create_started_at) == (0, None, T0)
    assert second.status is BatchStatus.PREPARED  # never uploaded: the pass stopped
    assert calls(emu) == {LIST: 1, FIND: 1, UPLOAD: 1, CREATE: 1}
    run = ctx.store.get_run("r")
    assert run is not None
    assert run.status is RunStatus.PAUSED
    reason = (
        "insufficient_quota: Error code: 429 - You exceeded your current quota, please check "
        "your plan and billing details."
    )
    assert run.pause_reason == reason
    assert logged(caplog) == [("WARNING", f"run r paused: {reason}")]


def test_a_create_the_provider_refuses_ends_the_batch_rejected_with_its_reason(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    clock.now = T0
    emu.faults.create_reject_count = 1
    caplog.clear()
    with caplog.at_level("ERROR", logger="batchor"):
        assert submit(ctx) == 1  # the other batch still goes
    first, second = all_batches(ctx)
    why = (
        "provider answered HTTP 400: Error code: 400 - The batch was refused: its input file "
        "is not a valid batch input."
    )
    assert first.status is BatchStatus.ENDED
    assert first.provider_status == "rejected"
    assert first.provider_batch_id is None
    assert first.errors == (("create_rejected", why),)
    assert (first.failures, first.not_before) == (0, None)
    assert second.status is BatchStatus.SUBMITTED
    assert calls(emu) == {LIST: 1, FIND: 2, UPLOAD: 2, CREATE: 2}
    assert emu.stats.batches_created == 1
    assert logged(caplog) == [("ERROR", f"batch r/000000: the provider rejected it: {why}")]
    emu.stats.reset()
    assert submit(ctx) == 0  # an ended batch is never created again
    assert calls(emu) == {}


def test_the_items_of_a_rejected_batch_are_charged_an_attempt_and_retried(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    from batchor.engine.collect import collect

    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.create_reject_count = 1
    assert submit(ctx) == 0
    assert collect(ctx) == 1
    rows = item_rows(ctx)
    assert [(r.status, r.attempts, r.error_class) for r in rows] == [
        (ItemStatus.PENDING, 1, "batch_failed")
    ] * 2


def test_a_file_the_provider_refuses_ends_its_batch_and_charges_its_items(
    runner: BatchRunner,
) -> None:
    from batchor.engine.collect import collect

    # An upload refused for good (here: over the file size limit) must not escape the pass
    # and fail every refresh: the batch ends 'rejected' and its items are charged.
    with OpenAIBatchEmulator(limits=EmulatorLimits(max_upload_bytes=64)) as small:
        ctx = prepared(runner, small, n=2, max_requests=2)
        assert submit(ctx) == 0
        assert calls(small) == {LIST: 1, FIND: 1, UPLOAD: 1}
        (ended,) = all_batches(ctx)
        assert ended.status is BatchStatus.ENDED
        assert ended.provider_status == "rejected"
        assert ended.file_id is None
        assert ended.errors[0].code == "upload_rejected"
        assert collect(ctx) == 1
    rows = item_rows(ctx)
    assert [(r.status, r.attempts, r.error_class) for r in rows] == [
        (ItemStatus.PENDING, 1, "batch_failed")
    ] * 2
    assert all("upload_rejected" in (r.error_message or "") for r in rows)


# ---- a create already started (a provider id never recorded) ------------------------------


@pytest.fixture
def live_thread() -> Iterator[threading.Thread]:
    """Another thread of this process, alive for the test."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    yield thread
    done.set()
    thread.join()


@pytest.mark.parametrize("where", ["other-host", "live-process-here", "live-thread-here"])
def test_a_create_started_by_a_live_worker_is_left_alone_for_its_lease(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    where: str,
    live_thread: threading.Thread,
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    claimant = {
        "other-host": "elsewhere:4242:1",
        "live-process-here": f"{HOST}:{os.getppid()}:1",
        "live-thread-here": f"{HOST}:{os.getpid()}:{live_thread.ident}",
    }[where]
    before = claimed_elsewhere(ctx, claimant, T0)
    emu.stats.reset()
    for at in (T0, T0 + 60.0, T0 + 119.5):
        clock.now = at
        assert submit(ctx) == 0
        assert batch(ctx) == before  # not touched
    assert calls(emu) == {LIST: 3}  # each pass looked for it, and created nothing
    assert emu.stats.batches_created == 0
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.QUEUED}
    # The lease has run out: exactly one create.
    emu.stats.reset()
    clock.now = T0 + 120.0
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, CREATE: 1}
    done = batch(ctx)
    assert done.status is BatchStatus.SUBMITTED
    assert (done.create_started_at, done.claimed_by) == (T0 + 120.0, owner())
    assert done.file_id == before.file_id
    assert emu.stats.batches_by_metadata(KEY) == Counter({"r/000000": 1})
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.SUBMITTED}


@pytest.mark.parametrize(
    ("where", "waits"),
    [
        ("other-host", True),
        ("live-process-here", True),
        ("dead-process-here", False),
        ("live-thread-here", False),  # threads of one process do not wait for each other
    ],
)
def test_a_batch_packed_by_a_live_worker_elsewhere_is_uploaded_by_it_alone(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    where: str,
    waits: bool,
    live_thread: threading.Thread,
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    packed = batch(ctx)
    # The packer holds the batch it packed, for its upload, for a lease.
    assert packed.claimed_by == owner()
    assert packed.lease_until is not None
    assert packed.lease_until > time.time() + 50
    claimant = {
        "other-host": "elsewhere:4242:1",
        "live-process-here": f"{HOST}:{os.getppid()}:1",
        "dead-process-here": f"{HOST}:{dead_pid()}:1",
        "live-thread-here": f"{HOST}:{os.getpid()}:{live_thread.ident}",
    }[where]
    assert forge_batch(ctx.store, packed.pk, claimed_by=claimant, lease_until=T0 + 60)
    emu.stats.reset()
    if waits:
        clock.now = T0 + 59.5
        assert submit(ctx) == 0
        assert calls(emu) == {}  # nothing uploaded, nothing even looked up
        assert batch(ctx) == replace(packed, claimed_by=claimant, lease_until=T0 + 60)
    clock.now = T0 + 60.0 if waits else T0  # the lease has lapsed, or nobody holds it
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, FIND: 1, UPLOAD: 1, CREATE: 1}
    done = batch(ctx)
    assert done.status is BatchStatus.SUBMITTED
    assert (done.claimed_by, done.lease_until) == (owner(), None)
    assert emu.stats.batches_by_metadata(KEY) == Counter({"r/000000": 1})


def test_a_packers_hold_that_ran_down_is_taken_again_for_the_upload(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    packed = batch(ctx)
    # Its packer's lease ran down while earlier batches were being sent.
    assert forge_batch(ctx.store, packed.pk, lease_until=time.time() - 1)
    during: list[BatchRecord | None] = []
    upload = ctx.transport.upload_file

    def watched(*args: Any, **kwargs: Any) -> str:
        during.append(ctx.store.get_batch(packed.pk))
        return upload(*args, **kwargs)

    monkeypatch.setattr(ctx.transport, "upload_file", watched)
    assert submit(ctx) == 1
    (held,) = during
    assert held is not None
    # Held again, by the uploading worker, for a whole lease while its file goes.
    assert held.claimed_by == owner()
    assert held.lease_until is not None
    assert held.lease_until > time.time() + 50
    assert batch(ctx).lease_until is None  # recorded: nobody holds it any more


def test_an_upload_another_worker_took_meanwhile_is_left_to_it(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    packed = batch(ctx)
    read = ctx.store.batches

    def then_a_rival_takes_it(*args: Any, **kwargs: Any) -> list[BatchRecord]:
        seen = read(*args, **kwargs)  # this worker's view: held by nobody else
        assert ctx.store.claim_batch(
            packed.pk, BatchStatus.PREPARED, "rival:1:1", 60, steal_from=packed.claimed_by
        )
        return seen

    monkeypatch.setattr(ctx.store, "batches", then_a_rival_takes_it)
    emu.stats.reset()
    assert submit(ctx) == 0
    assert calls(emu) == {}  # nothing uploaded: the rival sends it
    assert batch(ctx).claimed_by == "rival:1:1"


def test_a_create_started_by_a_dead_worker_is_left_alone_for_the_grace_only(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    before = claimed_elsewhere(ctx, f"{HOST}:{dead_pid()}:1", T0)
    emu.stats.reset()
    for at in (T0, T0 + 9.5):
        clock.now = at
        assert submit(ctx) == 0
        assert batch(ctx) == before
    assert calls(emu) == {LIST: 2}
    clock.now = T0 + 10.0
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 3, CREATE: 1}
    assert batch(ctx).status is BatchStatus.SUBMITTED
    assert emu.stats.batches_by_metadata(KEY) == Counter({"r/000000": 1})


@pytest.mark.parametrize("claimant", ["this-thread", "gone-thread-of-this-process"])
def test_a_create_started_earlier_by_this_process_is_retried_at_once(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, claimant: str
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    me = owner() if claimant == "this-thread" else f"{HOST}:{os.getpid()}:1"
    claimed_elsewhere(ctx, me, T0)
    emu.stats.reset()
    clock.now = T0  # no time has passed at all
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, CREATE: 1}
    assert batch(ctx).status is BatchStatus.SUBMITTED


def test_a_create_that_landed_is_adopted_by_its_metadata_not_created_again(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    before = claimed_elsewhere(ctx, "elsewhere:4242:1", T0)
    # The other worker's create reached the provider; batches of another run or another key
    # carry parts of the same metadata and are not it.
    place(emu, {RUN: "other", KEY: "r/000000"})
    place(emu, {RUN: "r", KEY: "r/000001"})
    landed = place(emu, {RUN: "r", KEY: "r/000000"}, status="completed")
    place(emu, {RUN: "r"})
    emu.stats.reset()
    clock.now = T0 + 1.0  # well inside the other worker's lease
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1}
    done = batch(ctx)
    assert done.status is BatchStatus.SUBMITTED
    assert (done.provider_batch_id, done.provider_status) == (landed, "completed")
    assert (done.create_started_at, done.claimed_by) == (T0, "elsewhere:4242:1")
    assert done.file_id == before.file_id
    assert logged(caplog) == [("INFO", f"batch r/000000: adopted provider batch {landed}")]


def test_a_create_claim_lost_to_another_worker_creates_nothing(
    store_url: str, tmp_path: Any, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    with BatchRunner(store_url, tmp_path / "artifacts") as runner:
        ctx = prepared(runner, emu, n=2, max_requests=2)
        emu.faults.route_server_error_counts["POST /v1/batches"] = 1
        assert submit(ctx) == 0
        assert forge_batch(ctx.store, batch(ctx).pk, create_started_at=None)
        stale = batch(ctx)  # what this worker read: uploaded, no create started
        # Another worker claims the create meanwhile.
        claimed = claimed_elsewhere(ctx, "elsewhere:4242:1", T0)
        ctx.remote_batches = {}  # this worker had listed before
        emu.stats.reset()
        clock.now = T0 + 1.0
        assert submit_module._submit_one(ctx, stale) is False
        assert calls(emu) == {}
        assert batch(ctx) == claimed


def test_adoption_is_not_taken_over_a_create_claimed_by_another_worker(
    store_url: str, tmp_path: Any, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    with BatchRunner(store_url, tmp_path / "artifacts") as runner:
        ctx = prepared(runner, emu, n=2, max_requests=2)
        emu.faults.route_server_error_counts["POST /v1/batches"] = 1
        assert submit(ctx) == 0
        assert forge_batch(ctx.store, batch(ctx).pk, create_started_at=None)
        stale = batch(ctx)  # what this worker read: uploaded, no create started
        claimed = claimed_elsewhere(ctx, "elsewhere:4242:1", T0)  # another worker's claim
        content = input_bytes(ctx, stale)
        place(emu, {RUN: "r", KEY: "r/000000", SHA: sha(content)}, content)
        ctx.remote_batches = None
        emu.stats.reset()
        clock.now = T0 + 1.0
        assert submit_module._submit_one(ctx, stale) is False
        assert calls(emu) == {LIST: 1}
        assert batch(ctx) == claimed


# ---- lookup before the first create --------------------------------------------------------


@pytest.mark.parametrize("token_limit", [None, 1_000_000])
def test_a_provider_batch_with_the_same_input_is_adopted_before_the_first_create(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    token_limit: int | None,
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2, token_limit=token_limit)
    first = batch(ctx)
    content = input_bytes(ctx, first)
    earlier = place(emu, {RUN: "r", KEY: "r/000000", SHA: sha(content)}, content)
    place(emu, {RUN: "r2", KEY: "r/000000", SHA: sha(content)}, content)  # another run's
    file_id = remote_batches(emu)[earlier]["input_file_id"]
    emu.stats.reset()
    clock.now = T0
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert submit(ctx) == 2
    adopted, second = all_batches(ctx)
    assert adopted.status is BatchStatus.SUBMITTED
    assert (adopted.provider_batch_id, adopted.file_id) == (earlier, file_id)
    assert (adopted.create_started_at, adopted.claimed_by) == (T0, owner())
    assert adopted.reserved is (token_limit is not None)
    assert second.status is BatchStatus.SUBMITTED
    assert calls(emu) == {LIST: 1, FIND: 1, UPLOAD: 1, CREATE: 1}  # the second batch only
    assert emu.stats.batches_by_metadata(KEY) == Counter({"r/000001": 1})
    assert logged(caplog) == [
        ("INFO", "run r: 1 provider batches of this run in the last 26 h"),
        (
            "WARNING",
            f"batch r/000000: adopted provider batch {earlier} ({adopted.provider_status}), "
            "found at the "
            "provider with the same requests although the store had no record of it",
        ),
        ("INFO", f"batch r/000001: created provider batch {second.provider_batch_id}"),
    ]


def test_adopting_deletes_this_life_s_own_upload(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    # Uploaded, then waiting for room under the token limit (no create started) ...
    ctx = prepared(runner, emu, n=2, max_requests=2)
    ctx.settings = replace(ctx.settings, token_limit=1)  # no room for it
    clock.now = T0
    assert submit(ctx) == 0
    waiting = batch(ctx)
    assert (waiting.status, waiting.create_started_at) == (BatchStatus.UPLOADED, None)
    own = waiting.file_id
    # ... when another life's batch with the same input is found (a new context lists again).
    content = input_bytes(ctx, waiting)
    earlier = place(emu, {RUN: "r", KEY: "r/000000", SHA: sha(content)}, content)
    ctx.remote_batches = None
    emu.stats.reset()
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, DELETE: 1}
    done = batch(ctx)
    assert done.provider_batch_id == earlier
    assert done.file_id == remote_batches(emu)[earlier]["input_file_id"]
    assert own not in {f["id"] for f in emu.files()}


def test_adoption_lost_to_another_worker_does_nothing(
    store_url: str, tmp_path: Any, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    with BatchRunner(store_url, tmp_path / "artifacts") as runner:
        ctx = prepared(runner, emu, n=2, max_requests=2)
        stale = batch(ctx)
        content = input_bytes(ctx, stale)
        earlier = place(emu, {RUN: "r", KEY: "r/000000", SHA: sha(content)}, content)
        other = replace(ctx, remote_batches=None)
        clock.now = T0
        assert submit(other) == 1  # another worker adopts it first
        adopted = batch(ctx)
        assert adopted.provider_batch_id == earlier
        emu.stats.reset()
        assert submit_module._submit_one(ctx, stale) is False
        assert calls(emu) == {LIST: 1}
        assert batch(ctx) == adopted


def test_one_batch_with_the_same_input_among_several_is_adopted_newest_first(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    content = input_bytes(ctx, batch(ctx))
    meta = {RUN: "r", KEY: "r/000000", SHA: sha(content)}
    older = place(emu, meta, content)
    newer = place(emu, meta, content)
    emu.stats.reset()
    clock.now = T0
    caplog.clear()
    with caplog.at_level("WARNING", logger="batchor"):
        assert submit(ctx) == 1
    assert batch(ctx).provider_batch_id == newer
    assert calls(emu) == {LIST: 1}
    assert logged(caplog) == [
        (
            "WARNING",
            f"batch r/000000: the provider holds 2 batches with this batch key: {newer}, {older}",
        ),
        (
            "WARNING",
            f"batch r/000000: adopted provider batch {newer} ({batch(ctx).provider_status}), "
            "found at the "
            "provider with the same requests although the store had no record of it",
        ),
    ]


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_failed_or_cancelled_batch_with_other_input_is_ignored(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    status: str,
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    checksum = sha(input_bytes(ctx, batch(ctx)))
    dead = place(emu, {RUN: "r", KEY: "r/000000", SHA: "0123456789abcdef" * 4}, status=status)
    emu.stats.reset()
    clock.now = T0
    caplog.clear()
    with caplog.at_level("WARNING", logger="batchor"):
        assert submit(ctx) == 1
    created = batch(ctx)
    assert created.status is BatchStatus.SUBMITTED
    assert created.provider_batch_id != dead
    assert calls(emu) == {LIST: 1, FIND: 1, UPLOAD: 1, CREATE: 1}
    assert logged(caplog) == [
        (
            "WARNING",
            f"batch r/000000: provider batch {dead} carries this batch key with other requests "
            f"(input checksum 0123456789ab..., this one's {checksum[:12]}...); it {status}, "
            "so it is not adopted and a new batch is created",
        )
    ]


@pytest.mark.parametrize("harmless_newer", [False, True])
def test_a_live_batch_with_other_input_pauses_the_run_and_creates_nothing(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    harmless_newer: bool,
) -> None:
    ctx = prepared(runner, emu, n=4, max_requests=2)
    checksum = sha(input_bytes(ctx, batch(ctx)))
    live = place(emu, {RUN: "r", KEY: "r/000000", SHA: "fedcba9876543210" * 4}, status="completed")
    if harmless_newer:
        place(emu, {RUN: "r", KEY: "r/000000", SHA: "1" * 64}, status="cancelled")
    emu.stats.reset()
    clock.now = T0
    caplog.clear()
    with caplog.at_level("ERROR", logger="batchor"):
        assert submit(ctx) == 0
    reason = (
        f"batch r/000000: provider batch {live} (completed) already carries this run id and "
        f"batch key, with other requests (input checksum fedcba987654..., this one's "
        f"{checksum[:12]}...); nothing was created, so as not to pay twice for the same "
        f"items. Start the job under a new run id, or cancel {live} at the provider and "
        "resume this run"
    )
    run = ctx.store.get_run("r")
    assert run is not None
    assert (run.status, run.pause_reason) == (RunStatus.PAUSED, reason)
    assert [b.status for b in all_batches(ctx)] == [BatchStatus.PREPARED] * 2  # pass stopped
    assert [b.failures for b in all_batches(ctx)] == [0, 0]
    assert calls(emu) == {LIST: 1}
    assert ctx.remote_batches is None  # looked at afresh when resumed
    assert logged(caplog) == [("ERROR", f"run r paused: {reason}")]
    # Resumed as it is: the provider is asked again, and the run stops again.
    ctx.store.set_run_status(ctx.run.pk, RunStatus.RUNNING, expected=[RunStatus.PAUSED])
    emu.stats.reset()
    assert submit(ctx) == 0
    assert calls(emu) == {LIST: 1}
    assert emu.stats.batches_created == 0


@pytest.mark.parametrize("local_checksum", [True, False])
def test_a_batch_without_a_checksum_is_never_taken_for_this_one(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, local_checksum: bool
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    if not local_checksum:
        # An uploaded batch whose input file and manifest are both gone: nothing to compare.
        emu.faults.route_server_error_counts["POST /v1/batches"] = 1
        assert submit(ctx) == 0
        assert forge_batch(ctx.store, batch(ctx).pk, create_started_at=None)
        ctx.artifacts.delete(batch(ctx).input_artifact)
        ctx.artifacts.delete(manifest_key(ctx, "r/000000"))
        ctx.remote_batches = None
    bare = place(emu, {RUN: "r", KEY: "r/000000"}, status="completed")
    emu.stats.reset()
    clock.now = T0
    assert submit(ctx) == 0
    run = ctx.store.get_run("r")
    assert run is not None
    assert run.status is RunStatus.PAUSED
    assert f"provider batch {bare} (completed) already carries" in (run.pause_reason or "")
    assert "with no input checksum to compare; nothing was created" in (run.pause_reason or "")
    assert calls(emu) == {LIST: 1}


def test_a_batch_with_a_checksum_is_never_taken_for_one_without(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    assert forge_batch(ctx.store, batch(ctx).pk, create_started_at=None)
    content = input_bytes(ctx, batch(ctx))
    ctx.artifacts.delete(batch(ctx).input_artifact)
    ctx.artifacts.delete(manifest_key(ctx, "r/000000"))
    ctx.remote_batches = None
    found = place(emu, {RUN: "r", KEY: "r/000000", SHA: sha(content)}, status="completed")
    emu.stats.reset()
    clock.now = T0
    assert submit(ctx) == 0
    run = ctx.store.get_run("r")
    assert run is not None
    assert run.pause_reason == (
        f"batch r/000000: provider batch {found} (completed) already carries this run id and "
        f"batch key, with other requests (input checksum {sha(content)[:12]}..., this one's "
        "unknown...); nothing was created, so as not to pay twice for the same items. Start "
        f"the job under a new run id, or cancel {found} at the provider and resume this run"
    )
    assert calls(emu) == {LIST: 1}


@pytest.mark.parametrize("refusal", ["quota", "other-input"])
def test_a_run_cancelled_meanwhile_is_not_paused_by_a_refusal(
    runner: BatchRunner, emu: OpenAIBatchEmulator, refusal: str
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    if refusal == "quota":
        emu.faults.create_insufficient_quota_count = 1
    else:
        place(emu, {RUN: "r", KEY: "r/000000", SHA: "0" * 64}, status="completed")
    assert ctx.store.request_cancel(ctx.run.pk, remote=False)  # by another worker
    assert submit(ctx) == 0
    run = ctx.store.get_run("r")
    assert run is not None
    assert (run.status, run.pause_reason) == (RunStatus.CANCELLING, None)


@pytest.mark.parametrize(("later", "adopted"), [(26 * 3600 - 10, True), (26 * 3600 + 10, False)])
def test_the_lookup_reaches_back_26_hours(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    clock: Clock,
    later: float,
    adopted: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    content = input_bytes(ctx, batch(ctx))
    earlier = place(emu, {RUN: "r", KEY: "r/000000", SHA: sha(content)}, content)
    emu.stats.reset()
    clock.now = time.time() + later
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert submit(ctx) == 1
    assert (batch(ctx).provider_batch_id == earlier) is adopted
    assert logged(caplog)[0] == (
        "INFO",
        f"run r: {int(adopted)} provider batches of this run in the last 26 h",
    )
    assert calls(emu).get(CREATE, 0) == int(not adopted)


# ---- uploads left by interrupted attempts -------------------------------------------------


def test_an_upload_left_by_an_interrupted_attempt_is_adopted_and_extra_copies_deleted(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    content = input_bytes(ctx, batch(ctx))
    name = f"batchor-r-000000-{sha(content)[:16]}.jsonl"
    c = client(emu)
    older = c.files.create(file=(name, content), purpose="batch").id
    newer = c.files.create(file=(name, content), purpose="batch").id
    c.files.create(file=(name.replace("000000", "000001"), content), purpose="batch")  # not it
    # An earlier life's upload for this batch key with other requests is not this one either.
    c.files.create(file=("batchor-r-000000-00000000deadbeef.jsonl", b"{}\n"), purpose="batch")
    emu.stats.reset()
    clock.now = T0
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, FIND: 1, DELETE: 1, CREATE: 1}
    done = batch(ctx)
    assert done.file_id == newer
    assert remote_batches(emu)[done.provider_batch_id or ""]["input_file_id"] == newer
    assert older not in {f["id"] for f in emu.files()}
    assert ("INFO", f"batch r/000000: adopted upload {newer}") in logged(caplog)


@pytest.mark.parametrize(("skew", "found"), [(299.5, True), (300.5, False)])
def test_an_earlier_upload_counts_back_to_five_minutes_before_the_batch_row(
    runner: BatchRunner, emu: OpenAIBatchEmulator, skew: float, found: bool
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    content = input_bytes(ctx, batch(ctx))
    name = f"batchor-r-000000-{sha(content)[:16]}.jsonl"
    upload = client(emu).files.create(file=(name, content), purpose="batch")
    assert forge_batch(ctx.store, batch(ctx).pk, created_at=upload.created_at + skew)
    emu.stats.reset()
    assert submit(ctx) == 1
    assert (batch(ctx).file_id == upload.id) is found
    assert calls(emu).get(UPLOAD, 0) == int(not found)


@pytest.mark.parametrize(("skew", "found"), [(299.5, True), (300.5, False)])
def test_a_landed_create_counts_back_to_five_minutes_before_the_batch_row(
    runner: BatchRunner, emu: OpenAIBatchEmulator, skew: float, found: bool
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    landed = place(emu, {RUN: "r", KEY: "r/000000"})
    created_at = remote_batches(emu)[landed]["created_at"]
    assert forge_batch(ctx.store, batch(ctx).pk, created_at=created_at + skew, not_before=None)
    emu.stats.reset()
    assert submit(ctx) == 1
    assert (batch(ctx).provider_batch_id == landed) is found
    assert calls(emu).get(CREATE, 0) == int(not found)


@pytest.mark.parametrize("same_file", [True, False])
def test_an_upload_recorded_first_by_another_worker_wins(
    store_url: str, tmp_path: Any, emu: OpenAIBatchEmulator, same_file: bool
) -> None:
    with BatchRunner(store_url, tmp_path / "artifacts") as runner:
        ctx = prepared(runner, emu, n=2, max_requests=2)
        stale = batch(ctx)  # this worker read it prepared and listed the provider ...
        ctx.remote_batches = {}
        assert submit(replace(ctx, remote_batches=None)) == 1  # ... another worker sent it
        winner = batch(ctx)
        if not same_file:  # its upload is gone from the listing: this worker uploads anew
            client(emu).files.delete(winner.file_id or "")
        emu.stats.reset()
        assert submit_module._submit_one(ctx, stale) is False
        assert batch(ctx) == winner
        uploads = [f["id"] for f in emu.files() if f["purpose"] == "batch"]
        if same_file:
            assert calls(emu) == {FIND: 1}
            assert uploads == [winner.file_id]  # the winner's file is kept
        else:
            assert calls(emu) == {FIND: 1, UPLOAD: 1, DELETE: 1}
            assert uploads == []  # this worker's own upload deleted
        assert len(emu.batches()) == 1


# ---- the enqueued-token limit --------------------------------------------------------------


def test_a_batch_waits_for_room_under_the_token_limit_without_starting_a_create(
    runner: BatchRunner, emu: OpenAIBatchEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = ingested(runner, emu, n=4, max_requests=2)
    assert pack(ctx) == 2
    tokens = batch(ctx).est_tokens or 0
    assert tokens > 0
    assert batch(ctx, 1).est_tokens == tokens
    ctx.settings = replace(ctx.settings, token_limit=tokens)  # room for one batch at a time
    emu.stats.reset()
    clock.now = T0
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert submit(ctx) == 1
    first, second = all_batches(ctx)
    assert (first.status, first.reserved) == (BatchStatus.SUBMITTED, True)
    assert (second.status, second.reserved) == (BatchStatus.UPLOADED, False)
    assert (second.create_started_at, second.failures, second.not_before) == (None, 0, None)
    assert calls(emu) == {LIST: 1, FIND: 2, UPLOAD: 2, CREATE: 1}
    assert (
        "INFO",
        "batch r/000001: waiting for room under the enqueued-token limit",
    ) in logged(caplog)


# ---- the input checksum ------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest", ["kept", "gone", "not-an-object", "no-checksum", "other-checksum"]
)
def test_the_checksum_sent_comes_from_the_manifest_else_from_the_input_file(
    runner: BatchRunner, emu: OpenAIBatchEmulator, manifest: str
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    record = batch(ctx)
    content = input_bytes(ctx, record)
    key = manifest_key(ctx, record.batch_key)
    expected = sha(content)
    if manifest == "gone":
        ctx.artifacts.delete(key)
    elif manifest != "kept":
        with ctx.artifacts.open_read(key) as fh:
            loaded = json.loads(fh.read())
        if manifest == "not-an-object":
            loaded = [loaded]
        elif manifest == "no-checksum":
            loaded["sha256"] = 12
        else:
            loaded["sha256"] = expected = "ab" * 32  # the manifest's word is taken
        with ctx.artifacts.open_write(key) as fh:
            fh.write(json.dumps(loaded).encode())
    assert submit(ctx) == 1
    (sent,) = emu.batches()
    assert sent["metadata"] == {RUN: "r", KEY: "r/000000", SHA: expected}


def test_an_uploaded_batch_whose_local_files_are_gone_is_created_unchecked(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = prepared(runner, emu, n=2, max_requests=2)
    emu.faults.route_server_error_counts["POST /v1/batches"] = 1
    assert submit(ctx) == 0
    ctx.artifacts.delete(batch(ctx).input_artifact)
    ctx.artifacts.delete(manifest_key(ctx, "r/000000"))
    assert forge_batch(ctx.store, batch(ctx).pk, not_before=None)
    emu.stats.reset()
    assert submit(ctx) == 1
    assert calls(emu) == {LIST: 1, CREATE: 1}
    (sent,) = emu.batches()
    assert sent["metadata"] == {RUN: "r", KEY: "r/000000"}


def test_a_lost_input_stops_only_its_own_batch_and_is_reported_after_the_pass(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = prepared(runner, emu, n=6, max_requests=2)
    for number in (0, 1):
        ctx.artifacts.delete(batch(ctx, number).input_artifact)
        ctx.artifacts.delete(manifest_key(ctx, f"r/{number:06d}"))
    with pytest.raises(RunStateError) as raised:
        submit(ctx)
    assert str(raised.value) == (
        "batch r/000000: its input file runs/r/batches/000000/input.jsonl is missing, and so "
        "is the record of the request slices to rebuild it from; restore the run's artifacts "
        "(runs/r/) from a copy, or cancel the run (`batchor cancel r`), which drops this "
        "batch and sends nothing more"
    )
    assert [b.status for b in all_batches(ctx)] == [
        BatchStatus.PREPARED,
        BatchStatus.PREPARED,
        BatchStatus.SUBMITTED,
    ]
    assert [b.failures for b in all_batches(ctx)] == [0, 0, 0]
    assert calls(emu) == {LIST: 1, FIND: 1, UPLOAD: 1, CREATE: 1}

"""The packing plan (`batchor.engine.plan`): a run ingested whole by this process is packed
from the cuts made while ingesting, without reading its items back, into exactly the
batches packing from the store makes; and wherever the store may disagree, packing reads
the store instead. A real SQLite store and artifacts; nothing is sent."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    BatchStatus,
    ItemStatus,
    PromptParts,
    RunStatus,
)
from batchor.engine import claims
from batchor.engine.context import RunContext, RunSettings
from batchor.engine.ingest import ingest
from batchor.engine.pack import pack
from batchor.engine.plan import PackPlan, drop_plan
from batchor.stores.base import NewItem
from batchor.testing import OpenAIBatchEmulator

from .test_submit_paths import all_batches, item_rows, provider_config, reload

_OUT: dict[str, Any] = {"capture_output": True, "text": True, "check": True}

# Texts of uneven length, so byte limits fall between items of different sizes.
TEXTS = [f"review {k} " + "x" * (k * 37 % 90) for k in range(13)]
LONG = [f"review {k} " + "x" * (k * 37 % 200) for k in range(40)]


@pytest.fixture
def emu() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def slices_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingestion writes a request slice per three items: batches span slices."""
    monkeypatch.setattr("batchor.engine.ingest.SLICE_SIZE", 3)


def started(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    run_id: str,
    texts: list[str],
    *,
    token_limit: int | None = None,
    **limits: Any,
) -> RunContext:
    """The run started and ingested whole by this process, nothing packed yet: the context
    the start drove it with (holding the plan, if one was made)."""
    job = BatchJob(
        items=[BatchItem(item_id=f"i{k}", payload={"text": t}) for k, t in enumerate(texts)],
        build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
        provider_config=provider_config(emu, token_limit),
        limits=BatchLimits(**limits),
    )

    def hold(_: int) -> None:  # stop the start's own packing
        record = runner.store.get_run(run_id)
        assert record is not None
        runner.store.set_run_status(record.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING])

    run = runner.start(job, run_id, on_ingest=hold)
    ctx: RunContext = run._ctx
    runner.store.set_run_status(ctx.run.pk, RunStatus.RUNNING, expected=[RunStatus.PAUSED])
    reload(ctx)
    return ctx


def reads_of_pending(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store's reads of pending items from now on."""
    calls: list[int] = []
    real = ctx.store.pending_items

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ctx.store, "pending_items", counted)
    return calls


def packed(ctx: RunContext) -> list[tuple[Any, ...]]:
    """Each batch as packed: requests, bytes, tokens, input file, manifest, items (the
    batch numbers differ: a plan dropped leaves its numbers unused)."""
    out = []
    by_batch: dict[int, list[int]] = {}
    for row in item_rows(ctx):
        by_batch.setdefault(_batch_of(ctx, row.seq), []).append(row.seq)
    for record in all_batches(ctx):
        number = record.batch_key.rsplit("/", 1)[1]
        with ctx.artifacts.open_read(record.input_artifact) as fh:
            content = fh.read()
        with ctx.artifacts.open_read(f"{ctx.run_dir}/requests/batch-{number}.ranges.json") as fh:
            manifest = fh.read()
        out.append(
            (
                record.request_count,
                record.input_bytes,
                record.est_tokens,
                content,
                manifest,
                by_batch[record.pk],
            )
        )
    return out


def forming(ctx: RunContext) -> list[int]:
    """The run's forming batches' primary keys."""
    return [b.pk for b in ctx.store.batches(ctx.run.pk, [BatchStatus.FORMING])]


def _batch_of(ctx: RunContext, seq: int) -> int:
    import sqlalchemy as sa

    from batchor.stores.schema import items

    with ctx.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(
            conn.execute(
                sa.select(items.c.batch_pk).where(items.c.run_pk == ctx.run.pk, items.c.seq == seq)
            ).scalar_one()
        )


@pytest.mark.parametrize(
    "limits",
    [
        {"max_requests": 4},
        {"max_bytes": 1_000},
        {"token_limit": 200},
        {"max_requests": 5, "max_bytes": 1_300, "token_limit": 150},
    ],
    ids=["requests", "bytes", "tokens", "all"],
)
def test_planned_batches_are_the_batches_packing_reads_from_the_store(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
) -> None:
    planned = started(runner, emu, "planned", LONG, **limits)
    assert planned.plan is not None
    assert planned.plan.ready
    reads = reads_of_pending(planned, monkeypatch)
    made = pack(planned)
    assert reads == []  # the items were not read back
    assert made == len(all_batches(planned)) > 2
    assert planned.plan is None  # spent: retries are packed from the store
    assert pack(planned) == 0
    assert reads == [1]

    from_store = started(runner, emu, "stored", LONG, **limits)
    from_store.plan = None
    assert pack(from_store) == made
    assert packed(planned) == packed(from_store)


def test_one_planned_batch_per_call_when_asked(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = started(runner, emu, "r", TEXTS, max_requests=5)
    reads = reads_of_pending(ctx, monkeypatch)
    assert [pack(ctx, max_batches=1) for _ in range(4)] == [1, 1, 1, 0]
    assert reads == [1]  # only the last call, once the plan was spent
    assert [b.request_count for b in all_batches(ctx)] == [5, 5, 3]


def test_an_item_too_large_alone_leaves_packing_to_the_store(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    texts = [*TEXTS[:5], "y" * 2_000, *TEXTS[5:]]
    ctx = started(runner, emu, "r", texts, max_bytes=1_500)
    assert ctx.plan is not None
    assert not ctx.plan.valid
    assert pack(ctx) >= 1
    states = {row.seq: row for row in item_rows(ctx)}
    assert states[6].status is ItemStatus.FAILED
    assert states[6].error_class == "request_too_large"
    assert all(r.status is ItemStatus.QUEUED for s, r in states.items() if s != 6)


def test_a_batch_dissolved_by_another_worker_drops_the_plan(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = started(runner, emu, "r", TEXTS, max_requests=4)
    assert ctx.plan is not None
    # Another worker dissolves the plan's second batch (its owner looked gone to it).
    second = ctx.plan.cuts[1].batch_pk
    assert second is not None
    assert ctx.store.dissolve_batch(second) == 4
    assert pack(ctx, max_batches=2) == 1  # the first; the second is refused whole
    assert ctx.plan is None
    assert forming(ctx) == []  # the plan's other batches were dissolved with it
    assert pack(ctx) == 3  # from the store: 5..8 / 9..12 / 13
    batches = [(b.request_count, b.batch_key) for b in all_batches(ctx)]
    assert batches == [(4, "r/000000"), (4, "r/000002"), (4, "r/000003"), (1, "r/000004")]
    assert all(b.status is BatchStatus.PREPARED for b in all_batches(ctx))
    rows = {row.seq: row.status for row in item_rows(ctx)}
    assert set(rows.values()) == {ItemStatus.QUEUED}
    assert sorted(rows) == list(range(1, 14))
    # The refused batch left no files behind.
    assert not ctx.artifacts.exists(f"{ctx.run_dir}/batches/000001/input.jsonl")
    assert not ctx.artifacts.exists(f"{ctx.run_dir}/requests/batch-000001.ranges.json")


def test_a_plan_not_made_from_the_first_item_is_dropped_by_ingestion(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = started(runner, emu, "r", TEXTS, max_requests=4)
    ctx.plan = PackPlan(ctx.settings, "me")  # expects item 1, but 13 are in
    ingest(ctx, iter(()), lambda item: PromptParts(prompt=""))
    assert ctx.plan is None


def test_a_plan_fed_items_out_of_order_is_not_trusted(runner: BatchRunner) -> None:
    settings = RunSettings(max_attempts=3, max_requests=10, max_bytes=1_000, structured=False)
    plan = PackPlan(settings, "me")
    plan.add([NewItem(1, "a", 0, 0, 10, "h", 1), NewItem(2, "b", 0, 10, 10, "h", 1)])
    assert plan.next_seq == 3
    plan.add([NewItem(4, "d", 1, 0, 10, "h", 1)])
    plan.finish()
    assert not plan.ready
    fresh = PackPlan(settings, "me")
    fresh.add([NewItem(1, "a", 0, 0, 10, "h", 1), NewItem(2, "b", 1, 0, 10, "h", 1)])
    fresh.finish()
    assert fresh.ready
    (cut,) = fresh.cuts
    assert (cut.first, cut.last, cut.size, cut.tokens) == (1, 2, 20, 2)
    assert cut.ranges == [[0, 0, 10], [1, 0, 10]]


@pytest.mark.parametrize("limit", ["max_bytes", "token_limit"])
def test_an_item_that_exactly_fills_a_batch_is_in_it(
    runner: BatchRunner, emu: OpenAIBatchEmulator, limit: str
) -> None:
    probe = started(runner, emu, "probe", LONG)
    drop_plan(probe)
    pending = probe.store.pending_items(probe.run.pk, 0, 100)
    size = (lambda it: it.req_length) if limit == "max_bytes" else (lambda it: it.est_tokens)
    # The first k items fill a batch exactly, at a limit no item alone exceeds.
    least = max(1_000, *map(size, pending)) if limit == "max_bytes" else max(map(size, pending))
    total, k = 0, 0
    while total < least:
        total += size(pending[k])
        k += 1
    ctx = started(runner, emu, "r", LONG, **{limit: total})
    assert ctx.plan is not None
    assert ctx.plan.ready
    pack(ctx)
    first = all_batches(ctx)[0]
    assert first.request_count == k
    assert (first.input_bytes if limit == "max_bytes" else first.est_tokens) == total


def test_items_are_born_in_the_batches_the_plan_cuts_and_sealed_without_a_rewrite(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = started(runner, emu, "r", TEXTS, max_requests=5)
    assert ctx.plan is not None
    cuts = [(c.first, c.last, c.batch_pk) for c in ctx.plan.cuts]
    assert [(first, last) for first, last, _ in cuts] == [(1, 5), (6, 10), (11, 13)]
    assert forming(ctx) == [pk for _, _, pk in cuts]
    assert ctx.store.pending_items(ctx.run.pk, 0, 100) == []
    for first, last, pk in cuts:
        assert [_batch_of(ctx, seq) for seq in range(first, last + 1)] == [pk] * (last - first + 1)
    assert pack(ctx) == 3
    sealed = all_batches(ctx)
    assert [(b.pk, b.batch_key, b.status) for b in sealed] == [
        (pk, f"r/{n:06d}", BatchStatus.PREPARED) for n, (_, _, pk) in enumerate(cuts)
    ]
    assert [b.request_count for b in sealed] == [5, 5, 3]


def _formed_elsewhere(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
    claimant: str,
    lease: str,
) -> RunContext:
    """A run ingested whole by another worker (``claimant``, its lease ``lease`` seconds),
    which cut its batches and then went quiet; the context of this worker, without a plan."""
    with monkeypatch.context() as patch:
        patch.setattr("batchor.engine.ingest.owner", lambda: claimant)
        patch.setenv("BATCHOR_LEASE_SECONDS", lease)
        ctx = started(runner, emu, "r", TEXTS, max_requests=5)
    ctx.plan = None
    return ctx


def test_a_forming_batch_of_a_live_worker_elsewhere_is_left_until_its_lease_lapses(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _formed_elsewhere(runner, emu, monkeypatch, "elsewhere:1:1", "60")
    assert len(forming(ctx)) == 3
    assert pack(ctx) == 0  # its owner may still seal them
    assert len(forming(ctx)) == 3
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.QUEUED}
    later = time.time() + 61  # this worker's clock, past the lease
    monkeypatch.setattr("batchor.engine.pack.time", SimpleNamespace(time=lambda: later))
    assert pack(ctx) == 3  # lapsed: dissolved, and packed from the store
    assert forming(ctx) == []
    assert [(b.batch_key, b.request_count) for b in all_batches(ctx)] == [
        ("r/000000", 5),
        ("r/000001", 5),
        ("r/000002", 3),
    ]


def test_a_forming_batch_whose_process_died_is_dissolved_at_once(
    runner: BatchRunner, emu: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    dead = f"{claims._HOST}:{int(child.stdout)}:1"
    ctx = _formed_elsewhere(runner, emu, monkeypatch, dead, "3600")
    assert pack(ctx) == 3
    assert forming(ctx) == []
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.QUEUED}


def test_a_run_cancelled_while_its_batches_form_cancels_their_items(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = started(runner, emu, "r", TEXTS, max_requests=5)
    assert len(forming(ctx)) == 3
    other = runner.get_run("r")
    other.cancel()
    assert other.refresh().status is RunStatus.CANCELLED
    assert forming(ctx) == []
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.CANCELLED}
    # The worker that cut them can no longer seal them: nothing is packed or left behind.
    assert pack(ctx) == 0
    assert all_batches(ctx) == []
    assert not ctx.artifacts.exists(f"{ctx.run_dir}/batches/000000/input.jsonl")


def test_the_ingesting_worker_seals_its_batches_while_another_holds_the_packing_lock(
    pg_url: str, tmp_path: Path, emu: OpenAIBatchEmulator
) -> None:
    # Another worker packing the run (on Postgres one at a time, by a lock) must not keep the
    # worker that cut the batches from sealing and sending them: nobody else may seal them,
    # so they would wait for its process to end or its lease to lapse, then be repacked.
    from batchor.stores.open import open_store

    rival = open_store(pg_url)
    held = ExitStack()

    def hold_the_lock(_: int) -> None:
        if not held._exit_callbacks:  # first slice: the run exists
            record = rival.get_run("r")
            assert record is not None
            assert held.enter_context(rival.packing(record.pk))

    job = BatchJob(
        items=[BatchItem(item_id=f"i{k}", payload={"text": t}) for k, t in enumerate(TEXTS)],
        build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
        provider_config=provider_config(emu),
        limits=BatchLimits(max_requests=5),
    )
    with held, BatchRunner(store=pg_url, artifacts=tmp_path / "artifacts") as runner:
        run = runner.start(job, "r", on_ingest=hold_the_lock)
        assert held._exit_callbacks  # the rival held the lock throughout
        ctx: RunContext = run._ctx
        assert forming(ctx) == []
        assert [(b.batch_key, b.status, b.request_count) for b in all_batches(ctx)] == [
            (f"r/{n:06d}", BatchStatus.SUBMITTED, count) for n, count in enumerate([5, 5, 3])
        ]
        assert emu.stats.batches_by_metadata("batchor_batch_key") == {
            f"r/{n:06d}": 1 for n in range(3)
        }
    rival.close()

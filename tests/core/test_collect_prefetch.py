"""Collection downloads the next ended batch while it applies the one before (engine/collect.py):
the overlap, and a claim lost meanwhile. Real runs on a SQLite file against the emulator over
HTTP; the store's and transport's own methods are wrapped only to record or delay calls."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from batchor import BatchRunner, ItemStatus
from batchor.engine import claims
from batchor.engine.collect import collect
from batchor.engine.context import RunContext
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .test_collect_paths import _api_key, ended, job, rows  # noqa: F401 (a fixture)

CONTENT = ("GET", "/v1/files/{id}/content")
OTHER = "another-host:4242:1"  # another machine's worker: only its lease tells it is gone


def three_ended(runner: BatchRunner, emu: OpenAIBatchEmulator, run_id: str) -> RunContext:
    """A run of 6 items in 3 batches of 2, all ended at the provider and polled."""
    return ended(runner, emu, job(emu, 6, max_requests=2), run_id, batches=3)


def by_key(ctx: RunContext) -> list[BatchRecord]:
    return sorted(ctx.store.batches(ctx.run.pk, list(BatchStatus)), key=lambda b: b.batch_key)


def test_the_next_batch_is_downloaded_while_the_one_before_is_applied(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(latency=0.1)) as emu:
        ctx = three_ended(runner, emu, "overlap")
        first, second, third = by_key(ctx)
        events: list[tuple[float, str, Any]] = []
        download, apply, finish = (
            ctx.transport.download_file,
            ctx.store.apply_outcomes,
            ctx.store.finish_batch,
        )

        def downloading(file_id: str, dest: Any) -> int:
            events.append((time.monotonic(), "download", file_id))
            return download(file_id, dest)

        def applying(run_pk: int, batch_pk: int, *rest: Any) -> int:
            if batch_pk == first.pk:
                time.sleep(0.6)  # a slow store: the next download runs meanwhile
            return apply(run_pk, batch_pk, *rest)

        def finishing(run_pk: int, batch_pk: int, *rest: Any, **kw: Any) -> bool:
            events.append((time.monotonic(), "finish", batch_pk))
            return finish(run_pk, batch_pk, *rest, **kw)

        monkeypatch.setattr(ctx.transport, "download_file", downloading)
        monkeypatch.setattr(ctx.store, "apply_outcomes", applying)
        monkeypatch.setattr(ctx.store, "finish_batch", finishing)
        assert collect(ctx) == 3
        order = [(kind, what) for _, kind, what in events]
        # Each download named by its batch's output file; the second one starts (and the
        # third is not started) before the first batch is finished.
        downloads = [("download", b.output_file_id) for b in (first, second, third)]
        assert order[:2] == downloads[:2]
        assert order.index(("finish", first.pk)) < order.index(downloads[2])
        assert [what for kind, what in order if kind == "finish"] == [b.pk for b in by_key(ctx)]
        assert emu.stats.calls[CONTENT] == 3
    assert {b.status for b in by_key(ctx)} == {BatchStatus.COLLECTED}
    assert {r.status for r in rows(ctx).values()} == {ItemStatus.COMPLETED}
    assert all(b.claimed_by == claims.owner() for b in by_key(ctx))
    # The download thread ends with the collection.
    assert not [t for t in threading.enumerate() if t.name.startswith("batchor-download")]


def test_a_claim_lost_while_the_batch_before_was_applied_leaves_that_batch_alone(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIBatchEmulator() as emu:
        ctx = three_ended(runner, emu, "lapsed")
        first, second, third = by_key(ctx)
        apply = ctx.store.apply_outcomes

        def applying(run_pk: int, batch_pk: int, *rest: Any) -> int:
            if batch_pk == first.pk:
                # The second batch's lease ran out meanwhile and another worker took it over.
                assert ctx.store.claim_batch(
                    second.pk, BatchStatus.ENDED, OTHER, 60, steal_from=claims.owner()
                )
            return apply(run_pk, batch_pk, *rest)

        monkeypatch.setattr(ctx.store, "apply_outcomes", applying)
        assert collect(ctx) == 2
        assert emu.stats.calls[CONTENT] == 3  # the second batch's file, fetched before it was lost
    after = {b.pk: b for b in by_key(ctx)}
    assert [after[b.pk].status for b in (first, second, third)] == [
        BatchStatus.COLLECTED,
        BatchStatus.ENDED,
        BatchStatus.COLLECTED,
    ]
    assert after[second.pk].claimed_by == OTHER
    items = rows(ctx)
    assert [items[f"item-{i}"].status for i in range(6)] == [
        ItemStatus.COMPLETED,
        ItemStatus.COMPLETED,
        ItemStatus.SUBMITTED,  # left to the worker that holds the batch now
        ItemStatus.SUBMITTED,
        ItemStatus.COMPLETED,
        ItemStatus.COMPLETED,
    ]

"""Every path of `batchor.engine.pack`: batches filled to each limit (an item exactly at a
limit fits), too-large items failed with their reason, ``max_batches``, the counts returned,
the manifest beside each input file, packing interrupted or raced by another worker, and the
rebuild of a lost input file from the request slices. A real SQLite store, real artifacts,
the emulator over HTTP where a batch is sent."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest
import sqlalchemy as sa

from batchor import BatchRunner, BatchStatus, ItemStatus, RunStateError
from batchor.artifacts.local import LocalArtifactStore
from batchor.engine.context import RunContext
from batchor.engine.pack import manifest_key, pack, rebuild_input
from batchor.engine.submit import submit
from batchor.stores.base import PendingItem
from batchor.stores.schema import batches, items
from batchor.testing import OpenAIBatchEmulator

from .test_submit_paths import (
    SHA,
    all_batches,
    batch,
    ingested,
    item_rows,
    logged,
    reload,
)


@pytest.fixture
def emu() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def slices_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingestion writes a request slice per two items."""
    monkeypatch.setattr("batchor.engine.ingest.SLICE_SIZE", 2)


def pending(ctx: RunContext) -> list[PendingItem]:
    return ctx.store.pending_items(ctx.run.pk, 0, 10_000)


def line_of(ctx: RunContext, item: PendingItem) -> bytes:
    with ctx.artifacts.open_read(ctx.slice_key(item.req_slice)) as fh:
        fh.seek(item.req_offset)
        return fh.read(item.req_length)


def read(ctx: RunContext, key: str) -> bytes:
    with ctx.artifacts.open_read(key) as fh:
        return fh.read()


def manifest(ctx: RunContext, number: int) -> object:
    return json.loads(read(ctx, f"runs/{ctx.run.run_id}/requests/batch-{number:06d}.ranges.json"))


def queued_seqs(ctx: RunContext) -> dict[str, list[int]]:
    by_pk = {b.pk: b.batch_key for b in all_batches(ctx)}
    rows = ctx.store.item_rows(ctx.run.pk, 0, 10_000, [ItemStatus.QUEUED])
    seqs: dict[str, list[int]] = {}
    engine = sa.create_engine(f"sqlite:///{Path.cwd()}/store/batchor.db")
    with engine.connect() as conn:
        for row in rows:
            pk = conn.execute(
                sa.select(items.c.batch_pk).where(
                    items.c.run_pk == ctx.run.pk, items.c.seq == row.seq
                )
            ).scalar_one()
            seqs.setdefault(by_pk[pk], []).append(row.seq)
    engine.dispose()
    return seqs


# ---- filling batches ---------------------------------------------------------------------


def test_batches_are_filled_to_max_requests_with_a_manifest_each(
    runner: BatchRunner, emu: OpenAIBatchEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = ingested(runner, emu, n=5, max_requests=2)
    pend = pending(ctx)
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert pack(ctx) == 3
    groups = [pend[0:2], pend[2:4], pend[4:5]]
    expected_logs = []
    for number, (record, group) in enumerate(zip(all_batches(ctx), groups, strict=True)):
        content = b"".join(line_of(ctx, it) for it in group)
        assert record.batch_key == f"r/{number:06d}"
        assert record.status is BatchStatus.PREPARED
        assert record.input_artifact == f"runs/r/batches/{number:06d}/input.jsonl"
        assert read(ctx, record.input_artifact) == content
        assert (record.request_count, record.input_bytes) == (len(group), len(content))
        assert record.est_tokens == sum(it.est_tokens or 0 for it in group)
        assert manifest(ctx, number) == {
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
            "requests": len(group),
            "ranges": [[0, group[0].req_offset, group[-1].req_offset + group[-1].req_length]],
        }
        assert manifest_key(ctx, record.batch_key) == (
            f"runs/r/requests/batch-{number:06d}.ranges.json"
        )
        expected_logs.append(
            ("INFO", f"packed r/{number:06d}: {len(group)} requests, {len(content)} bytes")
        )
    assert logged(caplog) == expected_logs
    assert {row.status for row in item_rows(ctx)} == {ItemStatus.QUEUED}
    assert queued_seqs(ctx) == {
        "r/000000": [1, 2],
        "r/000001": [3, 4],
        "r/000002": [5],
    }
    assert pack(ctx) == 0  # nothing pending
    assert len(all_batches(ctx)) == 3


def test_max_batches_caps_each_call_and_leaves_the_rest_pending(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ingested(runner, emu, n=7, max_requests=2)
    assert pack(ctx, max_batches=2) == 2
    assert [len(pending(ctx)), len(all_batches(ctx))] == [3, 2]
    assert [it.seq for it in pending(ctx)] == [5, 6, 7]
    assert pack(ctx, max_batches=1) == 1
    assert [it.seq for it in pending(ctx)] == [7]
    assert pack(ctx, max_batches=5) == 1  # fewer than allowed: all there is
    assert pending(ctx) == []
    assert [b.request_count for b in all_batches(ctx)] == [2, 2, 2, 1]


@pytest.mark.parametrize("limit", ["bytes", "tokens"])
def test_an_item_exactly_at_a_limit_fits(
    runner: BatchRunner, emu: OpenAIBatchEmulator, limit: str
) -> None:
    ctx = ingested(runner, emu, n=4, max_requests=100)
    pend = pending(ctx)
    length, tokens = pend[0].req_length, pend[0].est_tokens or 0
    assert {(it.req_length, it.est_tokens) for it in pend} == {(length, tokens)}
    settings = ctx.settings
    for per_batch in (2, 1):
        fresh = ingested(runner, emu, f"r{per_batch}", n=4, max_requests=100)
        assert [(it.req_length, it.est_tokens) for it in pending(fresh)] == [(length, tokens)] * 4
        if limit == "bytes":
            fresh.settings = replace(settings, max_bytes=per_batch * length)
        else:
            fresh.settings = replace(settings, token_limit=per_batch * tokens)
        assert pack(fresh) == 4 // per_batch
        assert [b.request_count for b in all_batches(fresh)] == [per_batch] * (4 // per_batch)
        assert {row.status for row in item_rows(fresh)} == {ItemStatus.QUEUED}


def test_items_too_large_alone_are_failed_with_their_reason_and_the_rest_packed(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    texts = ["short 0", "x" * 2000, "short 2", "word " * 40, "short 4", "x" * 3000]
    ctx = ingested(runner, emu, n=len(texts), max_requests=100, texts=texts)
    pend = pending(ctx)
    short, huge, wordy = pend[0], pend[1], pend[3]
    # The wordy one fits in bytes, not in tokens; the short ones fit three to a batch.
    max_bytes = max(wordy.req_length, 3 * short.req_length)
    token_limit = (short.est_tokens or 0) * 3
    assert (wordy.est_tokens or 0) > token_limit
    ctx.settings = replace(ctx.settings, max_bytes=max_bytes, token_limit=token_limit)
    assert pack(ctx) == 1
    (record,) = all_batches(ctx)
    packed = [pend[0], pend[2], pend[4]]
    content = b"".join(line_of(ctx, it) for it in packed)
    assert read(ctx, record.input_artifact) == content  # copied around the gaps
    assert manifest(ctx, 0) == {
        "sha256": hashlib.sha256(content).hexdigest(),
        "bytes": len(content),
        "requests": 3,
        "ranges": [[0, it.req_offset, it.req_offset + it.req_length] for it in packed],
    }
    rows = {row.seq: row for row in item_rows(ctx)}
    by_bytes = f"the request line is larger than the batch limit of {max_bytes} bytes"
    by_tokens = (
        f"the request's estimated {wordy.est_tokens} tokens exceed the enqueued_token_limit "
        f"of {token_limit}"
    )
    for seq, message in ((2, by_bytes), (4, by_tokens), (6, by_bytes)):
        row = rows[seq]
        assert (row.status, row.attempts) == (ItemStatus.FAILED, 1)
        assert (row.error_class, row.error_message) == ("request_too_large", message)
    assert [rows[s].status for s in (1, 3, 5)] == [ItemStatus.QUEUED] * 3
    assert huge.req_length > max_bytes


def test_a_batch_spans_request_slices_and_pages_of_pending_items(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    slices_of_two: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("batchor.engine.pack._PAGE", 2)
    ctx = ingested(runner, emu, n=5, max_requests=100)
    pend = pending(ctx)
    assert [it.req_slice for it in pend] == [0, 0, 1, 1, 2]
    assert pack(ctx) == 1
    (record,) = all_batches(ctx)
    slices = [read(ctx, ctx.slice_key(n)) for n in range(3)]
    assert read(ctx, record.input_artifact) == b"".join(slices)
    assert manifest(ctx, 0) == {
        "sha256": hashlib.sha256(b"".join(slices)).hexdigest(),
        "bytes": sum(map(len, slices)),
        "requests": 5,
        "ranges": [[n, 0, len(data)] for n, data in enumerate(slices)],
    }
    assert record.request_count == 5


def test_the_quota_scope_is_recorded_only_under_a_token_limit(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    limited = ingested(runner, emu, "limited", n=2, token_limit=1_000_000)
    free = ingested(runner, emu, "free", n=2)
    assert pack(limited) == 1
    assert pack(free) == 1
    engine = sa.create_engine(f"sqlite:///{Path.cwd()}/store/batchor.db")
    with engine.connect() as conn:
        scopes = dict(conn.execute(sa.select(batches.c.batch_key, batches.c.quota_scope)).all())
    engine.dispose()
    assert scopes == {"limited/000000": "gpt-4.1-mini|", "free/000000": None}


# ---- when packing waits ------------------------------------------------------------------


def test_nothing_is_packed_before_ingestion_is_complete(
    runner: BatchRunner, emu: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    ctx = ingested(runner, emu, n=3)
    ctx.run = replace(ctx.run, ingest_complete=False)
    assert pack(ctx) == 0
    assert all_batches(ctx) == []
    assert len(pending(ctx)) == 3
    assert not (tmp_path / "artifacts/runs/r/batches").exists()


def test_nothing_is_packed_while_the_run_backs_off_for_capacity(
    runner: BatchRunner, emu: OpenAIBatchEmulator
) -> None:
    ctx = ingested(runner, emu, n=3)
    ctx.store.set_backoff(ctx.run.pk, time.time() + 60, 1)
    reload(ctx)
    assert pack(ctx) == 0
    assert all_batches(ctx) == []
    ctx.store.set_backoff(ctx.run.pk, time.time() - 0.001, 1)  # the backoff has run out
    reload(ctx)
    assert pack(ctx) == 2


# ---- interrupted and raced ---------------------------------------------------------------


def test_a_truncated_slice_stops_packing_and_leaves_the_items_pending(
    runner: BatchRunner, emu: OpenAIBatchEmulator, slices_of_two: None, tmp_path: Path
) -> None:
    ctx = ingested(runner, emu, n=4, max_requests=100)
    path = tmp_path / "artifacts/runs/r/requests/000000.jsonl"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="shorter than its items say") as raised:
        pack(ctx)
    assert str(raised.value) == (
        "request slice 0 of run 'r' is shorter than its items say: the artifact store lost "
        "or truncated it"
    )
    # The unfinished input file is gone at once, not only when the failed call is forgotten.
    folder = tmp_path / "artifacts/runs/r/batches/000000"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not (tmp_path / "artifacts/runs/r/requests/batch-000000.ranges.json").exists()
    assert all_batches(ctx) == []
    assert len(pending(ctx)) == 4


class _RacedArtifacts(LocalArtifactStore):
    """Real local artifacts, where another worker packs the run at the moment this one
    starts writing its first batch input file."""

    def __init__(self, root: Path, other: RunContext) -> None:
        super().__init__(root)
        self._other: RunContext | None = other

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        other, self._other = self._other, None
        if other is not None and key.endswith("input.jsonl"):
            assert pack(other) == 1
        with super().open_write(key) as fh:
            yield fh


def test_items_packed_by_another_worker_meanwhile_are_dropped_from_this_batch(
    runner: BatchRunner, emu: OpenAIBatchEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = ingested(runner, emu, n=3, max_requests=100)
    ctx = replace(other, artifacts=_RacedArtifacts(tmp_path / "artifacts", other))
    caplog.clear()
    with caplog.at_level("INFO", logger="batchor"):
        assert pack(ctx) == 0
    # This worker took number 000000, the other 000001, which holds every item.
    (record,) = all_batches(ctx)
    assert (record.batch_key, record.request_count) == ("r/000001", 3)
    root = tmp_path / "artifacts/runs/r"
    assert not (root / "batches/000000/input.jsonl").exists()
    assert not (root / "requests/batch-000000.ranges.json").exists()
    assert (root / "batches/000001/input.jsonl").exists()
    assert (root / "requests/batch-000001.ranges.json").exists()
    assert logged(caplog)[-1] == (
        "INFO",
        "batch r/000000: items were packed concurrently; dropped",
    )


# ---- a lost input file, rebuilt from the request slices ----------------------------------


def test_a_lost_input_is_rebuilt_byte_for_byte_before_it_is_sent(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    slices_of_two: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = ingested(runner, emu, n=5, max_requests=100)
    assert pack(ctx) == 1
    record = batch(ctx)
    packed = read(ctx, record.input_artifact)
    (tmp_path / "artifacts" / record.input_artifact).unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="batchor"):
        assert submit(ctx) == 1
    assert read(ctx, record.input_artifact) == packed
    (sent,) = emu.batches()
    assert sent["metadata"][SHA] == hashlib.sha256(packed).hexdigest()
    assert logged(caplog) == [
        ("WARNING", "batch r/000000: input file was missing; rebuilt from the request slices")
    ]


HOW = (
    "restore the run's artifacts (runs/r/) from a copy, or cancel the run (`batchor cancel "
    "r`), which drops this batch and sends nothing more"
)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("second-slice-gone", "request slice runs/r/requests/000001.jsonl is gone too"),
        ("slice-altered", "the rebuilt file differs from the one packed"),
        (
            "slice-truncated",
            "request slice 2 of run 'r' is shorter than its items say: the artifact store "
            "lost or truncated it",
        ),
        ("no-ranges", "'ranges'"),
        ("ranges-not-a-list", "'int' object is not iterable"),
    ],
)
def test_a_lost_input_that_cannot_be_rebuilt_names_why_in_one_line(
    runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    slices_of_two: None,
    tmp_path: Path,
    damage: str,
    why: str,
) -> None:
    ctx = ingested(runner, emu, n=5, max_requests=100)
    assert pack(ctx) == 1
    record = batch(ctx)
    root = tmp_path / "artifacts/runs/r"
    (tmp_path / "artifacts" / record.input_artifact).unlink()
    ranges = root / "requests/batch-000000.ranges.json"
    if damage == "second-slice-gone":
        (root / "requests/000001.jsonl").unlink()
    elif damage == "slice-altered":
        data = (root / "requests/000001.jsonl").read_bytes()
        (root / "requests/000001.jsonl").write_bytes(data.replace(b"review", b"REVIEW"))
    elif damage == "slice-truncated":
        data = (root / "requests/000002.jsonl").read_bytes()
        (root / "requests/000002.jsonl").write_bytes(data[:-1])
    else:
        loaded = json.loads(ranges.read_bytes())
        if damage == "no-ranges":
            del loaded["ranges"]
        else:
            loaded["ranges"] = 7
        ranges.write_text(json.dumps(loaded))
    with pytest.raises(RunStateError) as raised:
        rebuild_input(ctx, record)
    assert str(raised.value) == (
        f"batch r/000000: its input file runs/r/batches/000000/input.jsonl is missing and "
        f"cannot be rebuilt from the request slices ({why}); {HOW}"
    )
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert not (tmp_path / "artifacts" / record.input_artifact).exists()  # nothing half-made


def test_a_lost_input_without_its_manifest_cannot_be_rebuilt(
    runner: BatchRunner, emu: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    ctx = ingested(runner, emu, n=2)
    assert pack(ctx) == 1
    record = batch(ctx)
    (tmp_path / "artifacts" / record.input_artifact).unlink()
    (tmp_path / "artifacts/runs/r/requests/batch-000000.ranges.json").write_text("[1, 2]")
    with pytest.raises(RunStateError) as raised:
        rebuild_input(ctx, record)
    assert str(raised.value) == (
        "batch r/000000: its input file runs/r/batches/000000/input.jsonl is missing, and so "
        f"is the record of the request slices to rebuild it from; {HOW}"
    )

"""The packing lock: of several workers driving one run, one packs at a time. On Postgres it
is a session lock the other workers find taken (at once, without waiting), freed when the
holder leaves the block or its session dies; on SQLite and in memory every caller may pack
(the write lock already serialises packers)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    OpenAIProviderConfig,
    PromptParts,
    RunStatus,
)
from batchor.stores.open import open_store
from batchor.stores.sql import SqlStateStore
from batchor.testing import OpenAIBatchEmulator

from .conftest import Backend
from .helpers import make_run

_HOLDER = sa.text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND ((classid::bigint << 32) | objid::bigint)"
    r" = hashtextextended(current_schema() || '\:batchor-pack\:' || CAST(:pk AS text), 0)"
)


def test_one_worker_at_a_time_packs_a_run(
    backend: Backend, store: SqlStateStore, rival: SqlStateStore
) -> None:
    run_pk = make_run(store)
    other_pk = make_run(store, run_id="other")
    shared = backend.name == "postgres"
    with store.packing(run_pk) as mine:
        assert mine
        with rival.packing(run_pk) as theirs:
            assert theirs is not shared  # Postgres: taken, and said at once
        with rival.packing(other_pk) as theirs:
            assert theirs  # another run's packing is free
    with rival.packing(run_pk) as theirs:
        assert theirs  # released when the holder's block ended
        with store.packing(run_pk) as mine:
            assert mine is not shared
    with store.packing(run_pk) as mine:
        assert mine


def test_a_runs_lock_is_its_own_in_each_schema(
    backend: Backend, store: SqlStateStore, request: pytest.FixtureRequest
) -> None:
    if backend.name != "postgres":
        pytest.skip("advisory locks are Postgres's")
    # Another schema of the same database, with its own run pk 1.
    elsewhere = open_store(request.getfixturevalue("pg_url"))
    try:
        with store.packing(1) as mine, elsewhere.packing(1) as theirs:
            assert (mine, theirs) == (True, True)
    finally:
        elsewhere.close()


def test_a_worker_that_dies_holding_the_lock_frees_it(
    backend: Backend, store: SqlStateStore, rival: SqlStateStore
) -> None:
    if backend.name != "postgres":
        pytest.skip("only Postgres holds the lock in a session")
    run_pk = make_run(store)
    with store.packing(run_pk) as mine:
        assert mine
        with rival.engine.connect() as admin:
            (pid,) = admin.execute(_HOLDER, {"pk": run_pk}).scalars()
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10  # the server ends the session shortly
        while True:
            with rival.packing(run_pk) as theirs:
                if theirs:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # The holder's block ended on a dead session without an error; it packs again next.
    with store.packing(run_pk) as mine:
        assert mine


def test_two_runners_on_one_postgres_run_never_pack_the_same_items(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, per_batch = 1_600, 100
    with OpenAIBatchEmulator() as emu:
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)  # for the handles from get_run
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        job = BatchJob(
            items=[BatchItem(item_id=f"i{k}", payload={"text": f"item {k}"}) for k in range(n)],
            build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
            limits=BatchLimits(max_requests=per_batch),
        )
        with (
            BatchRunner(pg_url, tmp_path / "artifacts") as first,
            BatchRunner(pg_url, tmp_path / "artifacts") as second,
        ):
            # The run is paused while it is ingested, so its start seals none of the batches
            # it cut; the two handles below, with no plan, dissolve them (cut by this process,
            # whose plan is gone, as after a crash) and pack the items together from the store.
            def pause(_: int) -> None:
                record = first.store.get_run("shared")
                assert record is not None
                first.store.set_run_status(
                    record.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING]
                )

            started = first.start(job, "shared", on_ingest=pause)
            assert started.summary().batches == {"forming": n // per_batch}
            assert first.store.set_run_status(1, RunStatus.RUNNING, expected=[RunStatus.PAUSED])
            handles = [first.get_run("shared"), second.get_run("shared")]
            caplog.set_level(logging.INFO, logger="batchor")
            with ThreadPoolExecutor(2) as pool:
                waits = [
                    pool.submit(h.wait, 60, poll_interval=0.02, max_poll_interval=0.2)
                    for h in handles
                ]
                summaries = [w.result() for w in waits]
        assert all(s.completed == n for s in summaries)
        keys = Counter(b["metadata"]["batchor_batch_key"] for b in emu.batches())
        assert len(keys) == n // per_batch
        assert set(keys.values()) == {1}
        packed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("packed ")]
        assert len(packed) == n // per_batch  # every batch packed once: none thrown away
        assert not [r for r in caplog.records if "packed concurrently" in r.getMessage()]

"""A lost store never buys a batch twice: before a batch key is first created, the run asks
the provider (one listing per run context) for a batch already carrying it, and adopts it
when its input checksum matches."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from openai import OpenAI

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    OpenAIProviderConfig,
    RunStateError,
    RunStatus,
)
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import make_items, prompt

LIST = ("GET", "/v1/batches")
CREATE = ("POST", "/v1/batches")
KEY = "batchor_batch_key"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")


def job_for(
    emu: OpenAIBatchEmulator, n: int = 30, max_requests: int = 10, text: str = "review {i}"
) -> BatchJob:
    return BatchJob(
        items=make_items(n, text=text),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        limits=BatchLimits(max_requests=max_requests),
    )


def per_key(emu: OpenAIBatchEmulator) -> dict[str, int]:
    return dict(emu.stats.batches_by_metadata(KEY))


class Store:
    """A store URL, and a way to lose everything in it."""

    def __init__(self, url: str, lose: Callable[[], None]) -> None:
        self.url = url
        self.lose = lose


def sqlite_store(tmp_path: Path) -> Store:
    path = tmp_path / "store" / "batchor.db"

    def lose() -> None:
        for leftover in path.parent.glob(path.name + "*"):  # the file, its -wal and -shm
            leftover.unlink()

    return Store(f"sqlite:///{path}", lose)


def postgres_store(pg_url: str) -> Store:
    schema = pg_url.rsplit("search_path%3D", 1)[1]

    def lose() -> None:
        engine = sa.create_engine(pg_url.split("?", 1)[0])
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        engine.dispose()

    return Store(pg_url, lose)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return sqlite_store(tmp_path)
    return postgres_store(request.getfixturevalue("pg_url"))


@pytest.mark.parametrize("lose_artifacts", [False, True], ids=["store", "store+artifacts"])
def test_a_lost_store_adopts_the_batches_it_had_created(
    store: Store, tmp_path: Path, lose_artifacts: bool
) -> None:
    artifacts = tmp_path / "artifacts"
    with OpenAIBatchEmulator(phase_seconds=0.3) as emu:
        with BatchRunner(store.url, artifacts) as first:
            started = first.start(job_for(emu), "tr1")
            assert [b.provider_batch_id is not None for b in started.batches()] == [True] * 3
        assert emu.stats.calls[LIST] == 1  # one listing for three first creates
        store.lose()
        if lose_artifacts:
            shutil.rmtree(artifacts)
        with BatchRunner(store.url, artifacts) as second:
            run = second.start(job_for(emu), "tr1")
            final = run.wait(poll_interval=0.05)
            assert final.status is RunStatus.COMPLETED
            assert final.completed == 30
            results = list(run.results())
            assert [r.item_id for r in results] == [f"item-{i}" for i in range(30)]
            assert {r.status for r in results} == {ItemStatus.COMPLETED}
            assert {r.attempts for r in results} == {1}
            adopted = {b.batch_key: b.provider_batch_id for b in run.batches()}
        # Exactly one provider batch per key, and the run adopted those very batches.
        assert per_key(emu) == {"tr1/000000": 1, "tr1/000001": 1, "tr1/000002": 1}
        assert emu.stats.calls[CREATE] == 3
        remote = {b["metadata"][KEY]: b for b in emu.batches()}
        assert adopted == {key: b["id"] for key, b in remote.items()}
        assert emu.stats.calls[LIST] == 2  # one per start, not one per batch
        # Each batch's metadata carries the checksum of exactly the lines it was sent.
        for batch in remote.values():
            sha = batch["metadata"]["batchor_input_sha256"]
            content = OpenAI(base_url=emu.base_url, api_key=emu.api_key).files.content(
                batch["input_file_id"]
            )
            assert hashlib.sha256(content.read()).hexdigest() == sha
        # Adopting uploads nothing: the second life's inputs were never sent.
        uploads = [f for f in emu.files() if f["purpose"] == "batch"]
        assert len(uploads) == 3


def test_a_batch_with_another_checksum_is_not_adopted_and_nothing_is_created(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = sqlite_store(tmp_path)
    artifacts = tmp_path / "artifacts"
    # The first life's batch is held in progress (it must still be live, cancellable, when
    # the second life finds it); the batch bought after it is answered at once.
    with OpenAIBatchEmulator(faults=EmulatorFaults(hold_count=1)) as emu:
        with BatchRunner(store.url, artifacts) as first:
            first.start(job_for(emu, n=5), "tr2")
        store.lose()
        shutil.rmtree(artifacts)
        # The same run id with other requests: the provider's tr2/000000 is not this batch.
        with BatchRunner(store.url, artifacts) as second:
            with caplog.at_level("ERROR", logger="batchor"):
                run = second.start(job_for(emu, n=5, text="other {i}"), "tr2")
            summary = run.summary()
            assert summary.status is RunStatus.PAUSED
            remote_id = emu.batches()[0]["id"]
            assert summary.pause_reason is not None
            assert "tr2/000000" in summary.pause_reason
            assert remote_id in summary.pause_reason
            assert "new run id" in summary.pause_reason
            assert any(remote_id in r.getMessage() for r in caplog.records)
            with pytest.raises(RunStateError, match="is paused"):
                run.wait(poll_interval=0.05)
            assert per_key(emu) == {"tr2/000000": 1}  # nothing bought twice
            # The way on that the message names: cancel the old batch, then resume.
            client = OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
            client.batches.cancel(remote_id)
            while client.batches.retrieve(remote_id).status != "cancelled":
                pass
            run.resume()
            final = run.wait(poll_interval=0.05, max_poll_interval=0.25)
            assert final.status is RunStatus.COMPLETED
            assert final.completed == 5
        assert per_key(emu) == {"tr2/000000": 2}
        assert sorted(b["status"] for b in emu.batches()) == ["cancelled", "completed"]


def test_a_batch_without_a_checksum_is_not_adopted(tmp_path: Path) -> None:
    """A batch carrying the key but no checksum (another tool, or an older batchor) cannot
    be told to hold the same requests: the run stops rather than guess."""
    store = sqlite_store(tmp_path)
    with OpenAIBatchEmulator(phase_seconds=5.0) as emu:
        client = OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        upload = client.files.create(
            file=(
                "x.jsonl",
                b'{"custom_id":"1","method":"POST","url":"/v1/responses",'
                b'"body":{"model":"gpt-4.1-mini","input":"hi"}}\n',
            ),
            purpose="batch",
        )
        client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/responses",
            completion_window="24h",
            metadata={"batchor_run_id": "tr3", KEY: "tr3/000000"},
        )
        with BatchRunner(store.url, tmp_path / "artifacts") as runner:
            run = runner.start(job_for(emu, n=3), "tr3")
            summary = run.summary()
            assert summary.status is RunStatus.PAUSED
            assert "no input checksum" in (summary.pause_reason or "")
        assert per_key(emu) == {"tr3/000000": 1}


def test_one_listing_per_start_however_many_batches(tmp_path: Path) -> None:
    with OpenAIBatchEmulator() as emu:
        with BatchRunner(sqlite_store(tmp_path).url, tmp_path / "artifacts") as runner:
            run = runner.run_and_wait(job_for(emu, n=24, max_requests=2), "many")
            assert run.summary().completed == 24
            assert emu.stats.calls[LIST] == 1
            assert emu.stats.calls[CREATE] == 12
            # A second start of the finished run creates nothing and lists nothing more.
            runner.start(job_for(emu, n=24, max_requests=2), "many")
            assert emu.stats.calls[LIST] == 1
        assert set(per_key(emu).values()) == {1}


def test_other_runs_batches_are_neither_adopted_nor_in_the_way(tmp_path: Path) -> None:
    with OpenAIBatchEmulator() as emu:
        with BatchRunner(sqlite_store(tmp_path).url, tmp_path / "artifacts") as runner:
            runner.run_and_wait(job_for(emu, n=5), "alpha")
            run = runner.run_and_wait(job_for(emu, n=5), "beta")
            assert run.summary().completed == 5
        assert per_key(emu) == {"alpha/000000": 1, "beta/000000": 1}

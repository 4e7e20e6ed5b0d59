"""Each provider failure has a defined outcome: final item states and provider calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
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
from batchor.providers.base import TransientProviderError
from batchor.providers.openai.transport import OpenAITransport
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt

BATCHES = ("POST", "/v1/batches")
CONTENT = ("GET", "/v1/files/{id}/content")


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Handles rehydrated with get_run read the key from the environment, as users' would.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")


def job_for(emu: OpenAIBatchEmulator, n: int = 10, max_requests: int = 50_000) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        limits=BatchLimits(max_requests=max_requests),
    )


def statuses(run: Any) -> dict[ItemStatus, int]:
    counts: dict[ItemStatus, int] = {}
    for r in run.results(include_pending=True):
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def exactly_once(emu: OpenAIBatchEmulator) -> None:
    per_key = emu.stats.batches_by_metadata("batchor_batch_key")
    assert set(per_key.values()) == {1}, per_key


def test_transient_http_errors_on_any_call_are_retried(runner: BatchRunner) -> None:
    faults = EmulatorFaults(seed=7, http_server_error_rate=0.25)
    with OpenAIBatchEmulator(faults=faults) as emu:
        run = runner.run_and_wait(job_for(emu, n=30, max_requests=10), "flaky")
        assert statuses(run) == {ItemStatus.COMPLETED: 30}
        assert all(r.attempts == 1 for r in run.results())
        exactly_once(emu)
        assert emu.stats.batches_created == 3
        assert emu.stats.total_calls < 80  # bounded: retries, not a storm


def test_rate_limited_create_backs_off_and_creates_once(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(create_rate_limit_count=2)) as emu:
        run = runner.run_and_wait(job_for(emu), "429")
        assert statuses(run) == {ItemStatus.COMPLETED: 10}
        assert emu.stats.calls[BATCHES] == 3
        assert emu.stats.batches_created == 1
        exactly_once(emu)


def test_token_limit_failure_resubmits_later_without_charge(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(fail_token_limit_count=1)) as emu:
        run = runner.run_and_wait(job_for(emu), "token-limit")
        assert statuses(run) == {ItemStatus.COMPLETED: 10}
        assert {r.attempts for r in run.results()} == {1}
        assert emu.stats.batches_created == 2
        assert emu.stats.calls[BATCHES] == 2
        failed = [b for b in emu.batches() if b["status"] == "failed"]
        assert failed[0]["errors"]["data"][0]["code"] == "token_limit_exceeded"


def test_insufficient_quota_pauses_the_run_until_resumed(
    tmp_path: Path, runner: BatchRunner
) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(create_insufficient_quota_count=1)) as emu:
        run = runner.start(job_for(emu), "quota")
        summary = run.summary()
        assert summary.status is RunStatus.PAUSED
        assert summary.pause_reason is not None
        assert "insufficient_quota" in summary.pause_reason
        with pytest.raises(RunStateError, match="is paused"):
            run.wait()
        assert emu.stats.batches_created == 0
        # Topped up: another process resumes the run.
        other = BatchRunner(
            f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts", api_key=emu.api_key
        )
        other.get_run("quota").resume()
        final = other.get_run("quota").wait()
        assert final.status is RunStatus.COMPLETED
        assert final.completed == 10
        assert emu.stats.calls[BATCHES] == 2
        assert emu.stats.batches_created == 1


def test_a_batch_cancelled_at_the_provider_keeps_answered_lines(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.4) as emu:
        run = runner.start(job_for(emu, n=4000), "cancelled-remotely")
        client = OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        batch_id = emu.batches()[0]["id"]
        while client.batches.retrieve(batch_id).request_counts.completed == 0:  # type: ignore[union-attr]
            pass
        client.batches.cancel(batch_id)  # someone cancels it in the provider's dashboard
        run.wait(poll_interval=0.05)
        assert statuses(run) == {ItemStatus.COMPLETED: 4000}
        assert {r.attempts for r in run.results()} == {1}
        assert emu.stats.batches_created == 2
        assert set(emu.stats.lines_answered.values()) == {1}  # nothing bought twice


def test_output_file_not_yet_available_is_downloaded_later(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(output_file_delay=0.5)) as emu:
        run = runner.run_and_wait(job_for(emu), "late-file")
        assert statuses(run) == {ItemStatus.COMPLETED: 10}
        assert emu.stats.calls[CONTENT] >= 2
        assert emu.stats.batches_created == 1


# ---- run controls -----------------------------------------------------------------------


def test_paused_runs_send_nothing_new_until_resumed(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(create_rate_limit_count=10_000)) as emu:
        handle = runner.start(job_for(emu, n=30, max_requests=10), "pausing")
        assert emu.stats.batches_created == 0  # creates are refused for now
        paused = runner.get_run("pausing").pause("maintenance window")
        assert paused.status is RunStatus.PAUSED
        assert paused.pause_reason == "maintenance window"
        with pytest.raises(RunStateError, match="maintenance window"):
            handle.wait(poll_interval=0.05)
        assert emu.stats.batches_created == 0
        emu.faults.create_rate_limit_count = 0
        runner.get_run("pausing").resume()
        final = handle.wait(poll_interval=0.05)
        assert final.status is RunStatus.COMPLETED
        assert final.completed == 30
        exactly_once(emu)


def test_batches_in_flight_are_collected_while_paused(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.2) as emu:
        handle = runner.start(job_for(emu, n=30, max_requests=10), "paused-in-flight")
        assert emu.stats.batches_created == 3
        runner.get_run("paused-in-flight").pause()
        final = handle.wait(poll_interval=0.05)
        assert final.status is RunStatus.COMPLETED  # nothing was left to send
        assert final.completed == 30


def test_cancel_drops_what_was_never_sent(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(faults=EmulatorFaults(create_rate_limit_count=1000)) as emu:
        runner.start(job_for(emu, n=25, max_requests=10), "cancel-local")
        final = runner.get_run("cancel-local").cancel()
        assert final.status is RunStatus.CANCELLED
        assert final.items[ItemStatus.CANCELLED] == 25
        assert emu.stats.batches_created == 0
        uploads = [f for f in emu.files() if f["purpose"] == "batch"]
        assert uploads == []  # uploaded inputs were deleted


def test_cancel_without_remote_lets_live_batches_finish(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.2) as emu:
        run = runner.start(job_for(emu, n=20), "cancel-soft")
        run.cancel()
        final = run.wait(poll_interval=0.05)
        assert final.status is RunStatus.CANCELLED
        assert final.completed == 20
        assert all(b["status"] == "completed" for b in emu.batches())


def test_cancel_remote_stops_live_batches_and_keeps_answered_lines(
    runner: BatchRunner,
) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.5) as emu:
        run = runner.start(job_for(emu, n=4000), "cancel-hard")
        runner.get_run("cancel-hard").cancel(remote=True)
        final = run.wait(poll_interval=0.05)
        assert final.status is RunStatus.CANCELLED
        assert [b["status"] for b in emu.batches()] == ["cancelled"]
        done = statuses(run)
        assert set(done) <= {ItemStatus.COMPLETED, ItemStatus.CANCELLED}
        assert sum(done.values()) == 4000
        answered = sum(emu.stats.lines_answered.values())
        assert done.get(ItemStatus.COMPLETED, 0) == answered  # every answered line kept
        with pytest.raises(RunStateError, match="cannot pause"):
            run.pause()


def test_a_long_run_under_random_faults_ends_with_every_item_accounted_for(
    runner: BatchRunner,
) -> None:
    faults = EmulatorFaults(
        seed=11,
        http_server_error_rate=0.05,  # 5xx on 5% of all calls
        line_server_error_rate=0.02,  # 5% bad lines in all
        line_rate_limit_rate=0.01,
        line_invalid_json_rate=0.02,
        expire_count=1,
        fail_token_limit_count=1,
    )
    with OpenAIBatchEmulator(faults=faults) as emu:
        job = BatchJob(
            items=make_items(20_000),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
            structured_output=Sentiment,
            limits=BatchLimits(max_requests=5_000),
        )
        run = runner.run_and_wait(job, "chaos")
        results = list(run.results())
        assert len(results) == 20_000
        assert len({r.item_id for r in results}) == 20_000  # no duplicates
        assert {r.status for r in results} <= {ItemStatus.COMPLETED, ItemStatus.FAILED}
        for r in results:
            if r.status is ItemStatus.FAILED:
                assert r.error is not None
                assert r.error.error_class in {"server_error", "rate_limited", "invalid_json"}
                assert r.error.message
                assert r.attempts == 3
        # Nearly everything succeeds within three attempts at a 5% line fault rate.
        assert sum(r.status is ItemStatus.COMPLETED for r in results) > 19_900
        exactly_once(emu)
        assert any(b["status"] == "expired" for b in emu.batches())
        assert any(b["status"] == "failed" for b in emu.batches())
        # Every answered line charged exactly one attempt; lines never answered (the
        # expired batch's second half, the refused batch) charged none.
        assert sum(emu.stats.lines_answered.values()) == sum(r.attempts for r in results)
        any_failed = any(r.status is ItemStatus.FAILED for r in results)
        expected = RunStatus.COMPLETED_WITH_FAILURES if any_failed else RunStatus.COMPLETED
        assert run.summary().status is expected


def test_backoff_doubles_with_jitter_and_is_bounded() -> None:
    from batchor.engine.backoff import backoff_delay

    for failures, ceiling in [(1, 2.0), (2, 4.0), (5, 32.0), (30, 600.0)]:
        delays = [backoff_delay(failures, base=2.0, cap=600.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, so workers that failed together spread out


class _UploadRacer(OpenAITransport):
    """The real transport; its first upload lets a second worker, with its own runner on the
    same store, submit the batch while this one is still uploading."""

    def __init__(self, emu: OpenAIBatchEmulator, tmp_path: Path) -> None:
        super().__init__(api_key=emu.api_key, base_url=emu.base_url)
        self.tmp_path = tmp_path
        self.raced = False

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        if not self.raced:
            self.raced = True
            with BatchRunner(
                store=f"sqlite:///{self.tmp_path}/store/batchor.db",
                artifacts=self.tmp_path / "artifacts",
            ) as other:
                other.get_run("upload-race").refresh()
        return super().upload_file(content, filename)


def test_two_workers_racing_to_upload_leave_one_upload_and_one_batch(tmp_path: Path) -> None:
    with (
        OpenAIBatchEmulator() as emu,
        BatchRunner(
            store=f"sqlite:///{tmp_path}/store/batchor.db",
            artifacts=tmp_path / "artifacts",
            provider=_UploadRacer(emu, tmp_path),
        ) as runner,
    ):
        run = runner.start(job_for(emu, n=10), "upload-race")
        final = run.wait(poll_interval=0.05)
        assert final.status is RunStatus.COMPLETED
        assert final.completed == 10
        assert emu.stats.batches_created == 1
        uploads = [f for f in emu.files() if f["purpose"] == "batch"]
        assert len(uploads) == 1  # the losing worker deleted its own upload
        assert uploads[0]["id"] == emu.batches()[0]["input_file_id"]


# ---- lost artifacts ---------------------------------------------------------------------


class _GatedUploads(OpenAITransport):
    """The real transport; while ``failing`` holds an element, every upload fails
    transiently (the batch stays prepared)."""

    def __init__(self, emu: OpenAIBatchEmulator, failing: list[bool]) -> None:
        super().__init__(api_key=emu.api_key, base_url=emu.base_url)
        self.failing = failing

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        if self.failing:
            raise TransientProviderError("provider unreachable: connection refused")
        return super().upload_file(content, filename)


@pytest.fixture
def emu() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def uploads_failing() -> list[bool]:
    """Clear it to let uploads through."""
    return [True]


@pytest.fixture
def gated_runner(
    tmp_path: Path, emu: OpenAIBatchEmulator, uploads_failing: list[bool]
) -> Iterator[BatchRunner]:
    """A runner whose uploads fail until ``uploads_failing`` is cleared."""
    with BatchRunner(
        store=f"sqlite:///{tmp_path}/store/batchor.db",
        artifacts=tmp_path / "artifacts",
        provider=_GatedUploads(emu, uploads_failing),
    ) as gated:
        yield gated


def test_a_prepared_batch_whose_input_file_is_lost_is_rebuilt_from_its_slices(
    tmp_path: Path, gated_runner: BatchRunner, emu: OpenAIBatchEmulator, uploads_failing: list[bool]
) -> None:
    import hashlib

    runner = gated_runner
    run = runner.start(job_for(emu), "lost-input")
    assert [b.status for b in run.batches()] == ["prepared"]
    path = tmp_path / "artifacts/runs/lost-input/batches/000000/input.jsonl"
    packed = path.read_bytes()
    path.unlink()
    uploads_failing.clear()
    final = runner.get_run("lost-input").wait(poll_interval=0.05)
    assert final.status is RunStatus.COMPLETED
    assert final.completed == 10
    assert path.read_bytes() == packed  # the same bytes, so the same checksum
    sent = emu.batches()[0]["metadata"]["batchor_input_sha256"]
    assert sent == hashlib.sha256(packed).hexdigest()
    exactly_once(emu)


@pytest.mark.parametrize("lost", ["slice", "all requests"])
def test_a_lost_input_that_cannot_be_rebuilt_is_one_line_naming_the_way_on(
    tmp_path: Path,
    gated_runner: BatchRunner,
    emu: OpenAIBatchEmulator,
    uploads_failing: list[bool],
    lost: str,
) -> None:
    import shutil

    runner = gated_runner
    runner.start(job_for(emu), "lost-all")
    root = tmp_path / "artifacts/runs/lost-all"
    (root / "batches/000000/input.jsonl").unlink()
    if lost == "slice":
        (root / "requests/000000.jsonl").unlink()  # the manifest is still there
    else:
        shutil.rmtree(root / "requests")
    uploads_failing.clear()
    for _ in range(2):  # every wait says the same, and sends nothing
        with pytest.raises(RunStateError) as raised:
            runner.get_run("lost-all").wait(poll_interval=0.05)
        message = str(raised.value)
        assert "\n" not in message
        assert "batch lost-all/000000" in message
        assert "batchor cancel lost-all" in message
        assert "FileNotFoundError" not in message
    assert emu.stats.batches_created == 0
    final = runner.get_run("lost-all").cancel()
    assert final.status is RunStatus.CANCELLED
    assert final.items[ItemStatus.CANCELLED] == 10

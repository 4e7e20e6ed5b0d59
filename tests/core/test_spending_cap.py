"""The spending cap (`BatchJob.max_cost_usd`) against the emulator through the openai SDK:
no batch is created past the cap, the run pauses with code ``budget`` and goes on once the
cap is raised (from a fresh process too), billed costs are reconciled from the results'
usage, and two workers at once never pass the cap together."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from batchor import (
    BatchRunner,
    BatchStatus,
    ConfigurationError,
    ItemStatus,
    ModelPrice,
    PriceTable,
    RunStateError,
    RunStatus,
    estimate_job,
)
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .cap_worker import BATCH, MODEL, OUTPUT_CAP, PRICES, capped_job, drive

WORKER = Path(__file__).with_name("cap_worker.py")
CREATE = ("POST", "/v1/batches")


def _per_batch(emu: OpenAIBatchEmulator, n: int, output_cap: int | None = OUTPUT_CAP) -> float:
    """The projected cost of one batch of the job (all batches are alike), as
    `estimate_job` prices the job."""
    found = estimate_job(
        capped_job(emu.base_url, n, None, api_key=emu.api_key, output_cap=output_cap),
        prices=PRICES,
    )
    total = found.estimated_max_cost_usd if output_cap else found.estimated_input_cost_usd
    assert total is not None
    assert found.batches == n // BATCH
    return total / found.batches


def _runner(
    tmp_path: Path,
    emu: OpenAIBatchEmulator | None = None,
    prices: Mapping[str, ModelPrice] | None = PRICES,
) -> BatchRunner:
    """A runner on the test's SQLite file, with the emulator's key (for `Run.resume`)."""
    return BatchRunner(
        f"sqlite:///{tmp_path}/store/batchor.db",
        tmp_path / "artifacts",
        api_key=None if emu is None else emu.api_key,
        prices=prices,
    )


def _billed(runner: BatchRunner, run_id: str) -> float:
    """The priced usage of the run's collected batches, batch by batch."""
    table = PriceTable(PRICES)
    total = 0.0
    for info in runner.get_run(run_id).batches():
        if info.status == BatchStatus.COLLECTED.value:
            cost = table.cost(MODEL, info.usage)
            assert cost is not None
            assert info.cost_usd == pytest.approx(cost)
            total += cost
    return total


def _amount(reason: str | None, label: str) -> float:
    """The amount of USD a pause reason names after ``label``."""
    found = re.search(re.escape(label) + r" \$([0-9.,]+)", reason or "")
    assert found is not None, reason
    return float(found.group(1).replace(",", ""))


def _worker(emu: OpenAIBatchEmulator, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": emu.api_key}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summary(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    summary: dict[str, object] = json.loads(out.splitlines()[-1])
    return summary


@pytest.mark.slow
def test_a_cap_sends_the_batches_that_fit_and_a_fresh_process_resumes_past_it(
    tmp_path: Path,
) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu:
        per_batch = _per_batch(emu, 40)
        cap = 2 * per_batch + per_batch / 4  # room for two of the four batches
        store = f"sqlite:///{tmp_path}/store/batchor.db"
        with _runner(tmp_path, emu) as runner:
            job = capped_job(emu.base_url, 40, cap, api_key=emu.api_key, output_cap=OUTPUT_CAP)
            run = runner.start(job, "capped")
            summary = drive(runner, "capped")  # collects what was sent, then stalls

            assert emu.stats.calls[CREATE] == 2
            assert summary.status is RunStatus.PAUSED
            assert summary.pause_code == "budget"
            reason = summary.pause_reason or ""
            assert _amount(reason, "projected cost") == pytest.approx(per_batch, rel=1e-3)
            assert _amount(reason, "committed cost") == pytest.approx(2 * per_batch, rel=1e-3)
            assert _amount(reason, "the cap") == pytest.approx(cap, rel=1e-3)
            assert "batchor resume capped --max-cost-usd" in reason
            assert summary.items[ItemStatus.COMPLETED] == 20
            assert summary.items[ItemStatus.QUEUED] + summary.items[ItemStatus.PENDING] == 20
            assert summary.batches.get("submitted", 0) == summary.batches.get("ended", 0) == 0
            assert summary.max_cost_usd == pytest.approx(cap)
            # Billed cost reconciled from the results' usage: what the two batches billed.
            billed = _billed(runner, "capped")
            assert summary.cost_usd == pytest.approx(billed)
            assert summary.committed_cost_usd == pytest.approx(billed)
            assert billed <= cap  # the projection at the output cap is an upper bound
            with pytest.raises(RunStateError, match="paused"):
                run.wait(poll_interval=0.05, max_poll_interval=0.25)

        resumed = _summary(
            _worker(emu, "resume", store, str(tmp_path / "artifacts"), "capped", "1")
        )
        assert resumed["status"] == "completed"
        assert resumed["items"] == {
            s.value: 40 if s is ItemStatus.COMPLETED else 0 for s in ItemStatus
        }
        assert resumed["max_cost_usd"] == 1.0
        assert emu.stats.calls[CREATE] == 4
        assert Counter(emu.stats.batches_by_metadata("batchor_batch_key").values()) == {1: 4}
        with _runner(tmp_path, emu) as runner:
            billed = _billed(runner, "capped")
        assert resumed["cost_usd"] == pytest.approx(billed)
        assert resumed["committed_cost_usd"] == pytest.approx(billed)


def test_resuming_without_raising_the_cap_pauses_again_and_sends_nothing(tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu, _runner(tmp_path, emu) as runner:
        per_batch = _per_batch(emu, 30)
        job = capped_job(
            emu.base_url, 30, per_batch * 1.5, api_key=emu.api_key, output_cap=OUTPUT_CAP
        )
        runner.start(job, "again")
        assert drive(runner, "again").pause_code == "budget"
        assert emu.stats.calls[CREATE] == 1

        summary = runner.get_run("again").resume()

        assert summary.status is RunStatus.PAUSED
        assert summary.pause_code == "budget"
        assert emu.stats.calls[CREATE] == 1
        # Raised by one batch's worth, exactly one more batch goes.
        summary = drive(runner, "again", resume_cap=_billed(runner, "again") + per_batch * 1.01)
        assert summary.pause_code == "budget"
        assert summary.items[ItemStatus.COMPLETED] == 20
        assert emu.stats.calls[CREATE] == 2


def test_without_an_output_cap_the_projection_counts_the_mean_billed_output(
    tmp_path: Path,
) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu, _runner(tmp_path, emu) as runner:
        input_only = _per_batch(emu, 20, output_cap=None)
        # Before any reply the projection is the input alone: one batch fits.
        job = capped_job(emu.base_url, 20, input_only * 1.5, api_key=emu.api_key)
        runner.start(job, "mean")
        first = drive(runner, "mean")
        assert first.pause_code == "budget"
        assert emu.stats.calls[CREATE] == 1
        mean = -(-first.usage.output_tokens // BATCH)
        price = PRICES[MODEL]
        projected = input_only + BATCH * mean * price.output_per_million / 1e6
        assert mean > 0
        assert first.cost_usd is not None

        # Room for the next batch's input, but not for its expected output.
        second = drive(runner, "mean", resume_cap=first.cost_usd + input_only * 1.5)

        assert second.pause_code == "budget"
        assert emu.stats.calls[CREATE] == 1
        assert _amount(second.pause_reason, "projected cost") == pytest.approx(projected, rel=1e-3)
        # The cap the pause reason suggests is enough for it.
        suggested = re.search(r"--max-cost-usd ([0-9.]+)", second.pause_reason or "")
        assert suggested is not None
        done = drive(runner, "mean", resume_cap=float(suggested.group(1)))
        assert done.status is RunStatus.COMPLETED
        assert emu.stats.calls[CREATE] == 2


def test_a_create_retried_after_a_failure_keeps_its_one_reservation(tmp_path: Path) -> None:
    faults = EmulatorFaults(route_server_error_counts={"POST /v1/batches": 2})
    with (
        OpenAIBatchEmulator(phase_seconds=0, faults=faults) as emu,
        _runner(tmp_path, emu) as runner,
    ):
        per_batch = _per_batch(emu, 10)
        job = capped_job(
            emu.base_url, 10, per_batch * 1.01, api_key=emu.api_key, output_cap=OUTPUT_CAP
        )
        runner.start(job, "retried")

        summary = drive(runner, "retried")

        assert summary.status is RunStatus.COMPLETED
        assert emu.stats.calls[CREATE] == 3  # two refused, then the one batch
        assert emu.stats.batches_created == 1


def test_a_process_without_the_models_price_sends_nothing_under_a_cap(tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu:
        per_batch = _per_batch(emu, 20)  # house-model is priced as the default model here
        job = capped_job(
            emu.base_url, 20, per_batch * 1.5, api_key=emu.api_key, output_cap=OUTPUT_CAP,
            model="house-model",
        )  # fmt: skip
        with _runner(tmp_path, emu, prices={"house-model": PRICES[MODEL]}) as runner:
            runner.start(job, "house")
            assert drive(runner, "house").pause_code == "budget"
        assert emu.stats.calls[CREATE] == 1
        # A process whose price table does not know the model cannot keep the cap.
        with _runner(tmp_path, emu, prices=None) as other:
            summary = other.get_run("house").resume(max_cost_usd=100.0)
        assert summary.status is RunStatus.PAUSED
        assert summary.pause_code == "budget"
        assert "no price for model 'house-model'" in (summary.pause_reason or "")
        assert emu.stats.calls[CREATE] == 1


def test_a_cap_on_a_model_without_a_price_is_refused_before_the_run_exists(
    tmp_path: Path,
) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu, _runner(tmp_path, emu, prices=None) as runner:
        job = capped_job(emu.base_url, 10, 1.0, api_key=emu.api_key, model="house-model")
        with pytest.raises(ConfigurationError, match=r"max_cost_usd.*'house-model'"):
            runner.start(job, "unpriced")
        assert runner.store.get_run("unpriced") is None
        assert emu.stats.total_calls == 0


def test_resume_refuses_a_cap_that_is_not_a_positive_number(tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu, _runner(tmp_path, emu) as runner:
        per_batch = _per_batch(emu, 20)
        runner.start(
            capped_job(
                emu.base_url, 20, per_batch * 1.5, api_key=emu.api_key, output_cap=OUTPUT_CAP
            ),
            "refused",
        )
        run = runner.get_run("refused")
        for bad in (0, -1.0, float("nan"), "5"):
            with pytest.raises(ConfigurationError, match="max_cost_usd"):
                run.resume(max_cost_usd=bad)  # type: ignore[arg-type]
        summary = run.summary()
        assert summary.status is RunStatus.PAUSED
        assert summary.max_cost_usd == pytest.approx(per_batch * 1.5)


@pytest.mark.slow
def test_two_workers_at_once_never_pass_the_cap_together(store_url: str, tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=0) as emu:
        per_batch = _per_batch(emu, 60)
        cap = 2 * per_batch + per_batch / 4  # two of the six batches, however they interleave
        args = ["start", store_url, str(tmp_path / "artifacts"), "shared", emu.base_url, "60"]
        workers = [_worker(emu, *args, repr(cap)) for _ in range(2)]
        summaries = [_summary(w) for w in workers]

        assert emu.stats.calls[CREATE] == 2
        assert emu.stats.batches_created == 2
        for summary in summaries:
            assert summary["status"] == "paused"
            assert summary["pause_code"] == "budget"
        with BatchRunner(store_url, tmp_path / "artifacts", prices=PRICES) as runner:
            final = runner.get_run("shared").summary()
            billed = _billed(runner, "shared")
        assert final.items[ItemStatus.COMPLETED] == 20
        assert final.items[ItemStatus.QUEUED] + final.items[ItemStatus.PENDING] == 40
        assert final.cost_usd == pytest.approx(billed)
        assert final.committed_cost_usd == pytest.approx(billed)

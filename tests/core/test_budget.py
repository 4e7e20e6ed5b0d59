"""The enqueued-token budget: estimated tokens in flight never exceed the limit across all
runs sharing a store and a model, and are released when batches are collected."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    OpenAIProviderConfig,
    PromptParts,
    RunStatus,
)
from batchor.providers.openai.tokens import estimate_tokens
from batchor.testing import OpenAIBatchEmulator

from .conftest import make_items, prompt

LIVE = {"validating", "in_progress", "finalizing", "cancelling"}


def _job(emu: OpenAIBatchEmulator, prefix: str, limit: int | None) -> BatchJob:
    return BatchJob(
        items=make_items(30, prefix=prefix),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini",
            base_url=emu.base_url,
            api_key=emu.api_key,
            enqueued_token_limit=limit,
        ),
        limits=BatchLimits(max_requests=10),
    )


def _most_live_at_once(tmp_path: Path, limit: int | None) -> tuple[int, BatchRunner]:
    with OpenAIBatchEmulator(phase_seconds=0.1) as emu:
        runner = BatchRunner(f"sqlite:///{tmp_path}/shared.db", tmp_path / "artifacts")
        most, stop = [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                most[0] = max(most[0], sum(b["status"] in LIVE for b in emu.batches()))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            runs = [runner.start(_job(emu, p, limit), f"budget-{p}") for p in ("a", "b")]
            while not all(r.refresh().is_terminal for r in runs):  # two workers, interleaved
                time.sleep(0.02)
        finally:
            stop.set()
            sampler.join()
        for run in runs:
            assert run.summary().status is RunStatus.COMPLETED
            assert run.summary().completed == 30
        return most[0], runner


def test_tokens_in_flight_never_exceed_the_limit_across_runs(tmp_path: Path) -> None:
    per_item = estimate_tokens(prompt(make_items(1)[0]))
    limit = 10 * per_item + per_item // 2  # room for one 10-item batch, not two
    most, runner = _most_live_at_once(tmp_path / "limited", limit)
    assert most == 1
    with runner.store.engine.connect() as conn:  # type: ignore[attr-defined]
        left = conn.execute(sa.text("SELECT in_flight FROM batchor_token_budget")).scalar()
    assert left == 0  # every reservation was released when its batch was collected


def test_without_a_limit_batches_overlap(tmp_path: Path) -> None:
    most, _ = _most_live_at_once(tmp_path / "unlimited", None)
    assert most >= 2  # the sampler does see concurrency when it is allowed


def test_a_request_over_the_limit_fails_alone(
    runner: BatchRunner, openai_emulator: OpenAIBatchEmulator
) -> None:
    items = [*make_items(3), *make_items(1, prefix="long", text="word " * 400)]
    job = BatchJob(
        items=items,
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="m",
            base_url=openai_emulator.base_url,
            api_key=openai_emulator.api_key,
            enqueued_token_limit=200,
        ),
    )
    run = runner.run_and_wait(job, "over-limit")
    by_id = {r.item_id: r for r in run.results()}
    assert by_id["long-0"].status is ItemStatus.FAILED
    assert by_id["long-0"].error is not None
    assert "enqueued_token_limit of 200" in by_id["long-0"].error.message
    assert {by_id[f"item-{i}"].status for i in range(3)} == {ItemStatus.COMPLETED}


def test_the_character_estimate() -> None:
    assert estimate_tokens(PromptParts(prompt="x" * 40)) == 10 + 8
    assert estimate_tokens(PromptParts(prompt="x" * 41, system="abc")) == 12 + 8

"""Several worker processes drive one run at once, on SQLite and on Postgres, under random
provider faults: one provider batch per batch key, every item ending exactly once. A worker
killed mid-collect is taken over by the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    BatchStatus,
    ItemStatus,
    OpenAIProviderConfig,
    PromptParts,
)
from batchor.engine.collect import collect
from batchor.engine.poll import poll
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

WORKER = Path(__file__).with_name("worker.py")
ITEMS = 20_000


def _source(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for k in range(n):
            fh.write(json.dumps({"id": f"i{k}", "text": f"item number {k}"}) + "\n")
    return path


def _popen(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _drive(
    emu: OpenAIBatchEmulator,
    store: str,
    tmp_path: Path,
    run_id: str,
    workers: int,
    n: int,
    *,
    dying: int = 0,
) -> list[subprocess.CompletedProcess[str]]:
    source = _source(tmp_path / "items.jsonl", n)
    env = {
        **os.environ,
        "OPENAI_API_KEY": emu.api_key,
        "OPENAI_BASE_URL": emu.base_url,
        "BATCHOR_LEASE_SECONDS": "5",
    }
    args = [sys.executable, str(WORKER), store, str(tmp_path / "artifacts"), str(source), run_id]
    procs: list[subprocess.Popen[str]] = []
    if dying:
        # The dying worker runs alone until it is applying a batch's results: started with
        # the others, it could find every batch collected by them and never hold a claim.
        marker = tmp_path / "dying-worker-collects"
        procs.append(_popen([*args, "die-in-collect", str(marker)], env))
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the dying worker never collected"
            time.sleep(0.02)
    procs += [_popen(args, env) for _ in range(workers - len(procs))]
    deadline = time.monotonic() + 240
    outcomes: list[subprocess.CompletedProcess[str]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        outcomes.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return outcomes


def _check_exactly_once(emu: OpenAIBatchEmulator, store: str, tmp_path: Path, run_id: str) -> None:
    keys = Counter(b["metadata"]["batchor_batch_key"] for b in emu.batches())
    assert keys
    assert set(keys.values()) == {1}, keys
    uploads = [f for f in emu.files() if f["purpose"] == "batch"]
    assert len(uploads) == len(keys)  # no orphaned or duplicate upload
    with BatchRunner(store, tmp_path / "artifacts") as runner:
        run = runner.get_run(run_id)
        summary = run.summary()
        results = list(run.results())
    assert summary.is_terminal
    ids = Counter(r.item_id for r in results)
    assert len(ids) == ITEMS
    assert set(ids.values()) == {1}
    statuses = Counter(r.status for r in results)
    assert set(statuses) <= {ItemStatus.COMPLETED, ItemStatus.FAILED}
    assert all(r.error is not None for r in results if r.status is ItemStatus.FAILED)
    assert statuses[ItemStatus.COMPLETED] > ITEMS * 0.9
    # Every answered line the provider billed is an attempt on exactly one item.
    assert summary.batches == {BatchStatus.COLLECTED.value: len(keys)}


def _faults() -> EmulatorFaults:
    return EmulatorFaults(
        seed=11,
        http_server_error_rate=0.03,
        line_server_error_rate=0.05,
        line_invalid_json_rate=0.02,
        expire_count=1,
        fail_token_limit_count=1,
    )


@pytest.mark.slow
def test_four_workers_drive_one_run(store_url: str, tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.2, faults=_faults()) as emu:
        outcomes = _drive(emu, store_url, tmp_path, "shared", workers=4, n=ITEMS)
        for o in outcomes:
            assert o.returncode == 0, o.stderr[-3000:]
            assert json.loads(o.stdout.splitlines()[-1])["status"].startswith("completed")
        _check_exactly_once(emu, store_url, tmp_path, "shared")


@pytest.mark.slow
def test_a_worker_killed_mid_collect_is_taken_over(store_url: str, tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=0.2, faults=_faults()) as emu:
        outcomes = _drive(emu, store_url, tmp_path, "shared", workers=4, n=ITEMS, dying=1)
        assert outcomes[0].returncode == -9  # it died holding a batch's collect claim
        for o in outcomes[1:]:
            assert o.returncode == 0, o.stderr[-3000:]
        _check_exactly_once(emu, store_url, tmp_path, "shared")


def test_a_claim_from_another_host_holds_until_its_lease_expires(tmp_path: Path) -> None:
    with (
        OpenAIBatchEmulator() as emu,
        BatchRunner(f"sqlite:///{tmp_path}/b.db", tmp_path / "a") as runner,
    ):
        job = BatchJob(
            items=[BatchItem(item_id=f"c{k}", payload={"text": f"claimed {k}"}) for k in range(5)],
            build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
            limits=BatchLimits(max_requests=5),
        )
        run = runner.start(job, "claimed")
        ctx = run._ctx
        deadline = time.monotonic() + 30
        while not runner.store.batches(ctx.run.pk, [BatchStatus.ENDED]):
            poll(ctx)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (batch,) = runner.store.batches(ctx.run.pk, [BatchStatus.ENDED])
        assert runner.store.claim_batch(batch.pk, BatchStatus.ENDED, "elsewhere:1", 1.0)
        assert collect(ctx) == 0  # a live claim on another machine: left alone
        time.sleep(1.1)
        assert collect(ctx) == 1  # the lease ran out: taken over
        assert run.refresh().completed == 5

"""batchor.steps: start / poll / collect are idempotent from any process; run ids are
deterministic and valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    OpenAIProviderConfig,
    RunNotReady,
    steps,
)
from batchor.errors import is_permanent
from batchor.runner import _RUN_ID
from batchor.testing import OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt


def _job(emu: OpenAIBatchEmulator) -> BatchJob:
    return BatchJob(
        items=make_items(25),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        structured_output=Sentiment,
        limits=BatchLimits(max_requests=10),
    )


def test_start_poll_collect_are_idempotent(
    runner: BatchRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")
    store, artifacts = f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"
    with OpenAIBatchEmulator(phase_seconds=1.0) as emu:  # slow enough to collect before it ends
        run_id = steps.run_id_from("reviews_dag", "2026-11-23T00:00:00+00:00")
        handle = steps.start(runner, _job(emu), run_id).handle
        assert emu.stats.batches_created == 3
        with BatchRunner(store, artifacts) as other:  # a retried task: another runner
            assert steps.start(other, _job(emu), run_id).handle == handle
        assert emu.stats.batches_created == 3
        assert steps.RunHandle.from_dict(json.loads(json.dumps(handle.to_dict()))) == handle

        with pytest.raises(RunNotReady, match="collect it once it has ended") as early:
            steps.collect(runner, run_id, tmp_path / "early.jsonl")
        assert not is_permanent(early.value)
        assert not (tmp_path / "early.jsonl").exists()

        deadline = time.monotonic() + 60
        while not (summary := steps.poll(runner, run_id)).is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert summary.completed == 25

    destination = tmp_path / "out" / "results.jsonl"
    result = steps.collect(runner, run_id, destination)
    assert result.results == 25
    assert result.counts == {"completed": 25, "failed": 0, "cancelled": 0}
    assert result.uri == str(destination.resolve())
    assert result.input_tokens > 0
    assert result.cost_usd is not None
    assert result.cost_usd > 0
    lines = destination.read_text().splitlines()
    assert sorted(json.loads(line)["item_id"] for line in lines) == sorted(
        f"item-{i}" for i in range(25)
    )
    written = destination.stat().st_mtime_ns, destination.stat().st_ino

    # Again, from a fresh process: the same result, and the file is not written again.
    code = (
        "import json, sys; from batchor import BatchRunner, steps; "
        "r = steps.collect(BatchRunner(sys.argv[1], sys.argv[2]), sys.argv[3], sys.argv[4]); "
        "print(json.dumps(r.to_dict()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    out = subprocess.run(
        [sys.executable, "-c", code, store, str(artifacts), run_id, str(destination)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert steps.CollectResult.from_dict(json.loads(out)) == result
    assert (destination.stat().st_mtime_ns, destination.stat().st_ino) == written

    # A deleted file is written again.
    destination.unlink()
    assert steps.collect(runner, run_id, destination) == result
    assert len(destination.read_text().splitlines()) == 25


def test_run_ids_are_deterministic_valid_and_distinct() -> None:
    cases = [
        ("dag", "2026-11-23"),
        ("my dag", "2026-11-23T00:00:00+00:00"),
        ("my_dag", "2026-11-23T00:00:00+00:00"),
        ("a.b", "c"),
        ("a", "b.c"),
        ("-leading", "x"),
        ("ü/ñ", "part"),
        ("x" * 150, "y" * 150),
        ("x" * 150, "y" * 151),
        (42, None),
    ]
    ids = [steps.run_id_from(*parts) for parts in cases]
    assert ids == [steps.run_id_from(*parts) for parts in cases]
    assert len(set(ids)) == len(ids)
    assert all(_RUN_ID.match(i) for i in ids), ids
    assert ids[0] == "dag.2026-11-23"  # clean parts stay readable
    assert all(len(i) <= 200 for i in ids)
    with pytest.raises(Exception, match="at least one part"):
        steps.run_id_from()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_collect_writes_results_to_an_object_store(
    runner: BatchRunner,
    s3_bucket: str,
    tmp_path: Path,
    suffix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fsspec
    import pyarrow.parquet as pq

    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")
    with OpenAIBatchEmulator() as emu:
        run_id = steps.start(runner, _job(emu), "to-s3").run_id
        deadline = time.monotonic() + 60
        while not steps.poll(runner, run_id).is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    uri = f"{s3_bucket}/exports/day=2026-11-23/results{suffix}"
    result = steps.collect(runner, run_id, uri)
    assert result.uri == uri
    assert result.results == 25
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fs.ls(f"{s3_bucket}/exports/day=2026-11-23", detail=False) == [uri[5:]]
    with fs.open(uri, "rb") as fh:
        data = fh.read()
    if suffix == ".parquet":
        local = tmp_path / "copy.parquet"
        local.write_bytes(data)
        ids = pq.read_table(local).column("item_id").to_pylist()
    elif suffix == ".csv":
        ids = [line.split(",", 1)[0] for line in data.decode().splitlines()[1:]]
    else:
        ids = [json.loads(line)["item_id"] for line in data.decode().splitlines()]
    assert sorted(ids) == sorted(f"item-{i}" for i in range(25))

    # Collected again: the object is there, so nothing is written; once gone, it is again.
    modified = fs.info(uri)["LastModified"]
    assert steps.collect(runner, run_id, uri) == result
    assert fs.info(uri)["LastModified"] == modified
    fs.rm_file(uri)
    assert steps.collect(runner, run_id, uri) == result
    assert fs.isfile(uri)


def test_results_export_to_a_url_with_a_credential_is_refused(
    runner: BatchRunner, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu), run_id="secretive")
        run.wait(timeout=60)
    with pytest.raises(ConfigurationError, match=r"^results URL .* carries a credential") as info:
        run.export_results("s3://user:hunter2@bucket/results.jsonl")
    assert "hunter2" not in str(info.value)

"""Retention: export a run's files with a manifest, prune them, and keep results readable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchor import (
    ArtifactPolicy,
    BatchJob,
    BatchLimits,
    BatchRunner,
    OpenAIProviderConfig,
    RunStateError,
)
from batchor.testing import OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt


def _job(emu: OpenAIBatchEmulator, n: int = 30, keep_raw_outputs: bool = True) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        structured_output=Sentiment,
        limits=BatchLimits(max_requests=10),
        artifact_policy=ArtifactPolicy(keep_raw_outputs=keep_raw_outputs),
    )


def _files(root: Path) -> dict[str, str]:
    """Relative path -> kind of file, for the run's artifacts."""
    return {p.relative_to(root).as_posix(): p.name for p in sorted(root.rglob("*")) if p.is_file()}


def test_pruning_a_run_that_is_still_going_is_refused(runner: BatchRunner, tmp_path: Path) -> None:
    with OpenAIBatchEmulator(phase_seconds=30) as emu:
        run = runner.start(_job(emu), "live")
        before = _files(tmp_path / "artifacts/runs/live")
        with pytest.raises(RunStateError, match="terminal runs only"):
            run.prune_artifacts()
        assert _files(tmp_path / "artifacts/runs/live") == before
        run.cancel()


def test_export_writes_every_file_with_its_hash_and_prune_keeps_results(
    runner: BatchRunner, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu), "audited")
        run.wait(poll_interval=0.05)
    results = [r.to_dict() for r in run.results()]
    root = tmp_path / "artifacts/runs/audited"

    # Raw outputs that were never exported are not deleted without force.
    with pytest.raises(RunStateError, match="never exported"):
        run.prune_artifacts(include_raw_outputs=True)
    assert len(list(root.rglob("output.jsonl"))) == 3

    export = run.export_artifacts(tmp_path / "audit")
    manifest = json.loads(Path(export.manifest).read_text())
    kinds = sorted({f["kind"] for f in manifest["files"]})
    assert kinds == ["batch_input", "raw_output", "requests"]
    assert export.files == len(manifest["files"]) == len(_files(root))
    for entry in manifest["files"]:
        copied = (tmp_path / "audit" / entry["path"]).read_bytes()
        original = (root / entry["path"]).read_bytes()
        assert copied == original
        assert (len(copied), hashlib.sha256(copied).hexdigest()) == (
            entry["bytes"],
            entry["sha256"],
        )
    assert [b["requests"] for b in manifest["batches"]] == [10, 10, 10]
    assert all(b["input_tokens"] > 0 for b in manifest["batches"])

    # Requests and inputs go first; raw outputs stay until asked for.
    pruned = run.prune_artifacts()
    assert sorted({Path(k).name for k in _files(root)}) == ["output.jsonl"]
    assert pruned.files == export.files - 3
    assert pruned.bytes > 0
    final = run.prune_artifacts(include_raw_outputs=True)  # exported since collected: allowed
    assert final.files == 3
    assert _files(root) == {}

    again = runner.get_run("audited")  # a fresh handle reads results from the store alone
    assert [r.to_dict() for r in again.results()] == results


def test_force_deletes_raw_outputs_that_were_never_exported(
    runner: BatchRunner, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu, n=5), "forced")
        run.wait(poll_interval=0.05)
    report = run.prune_artifacts(include_raw_outputs=True, force=True)
    assert report.files > 0
    assert _files(tmp_path / "artifacts/runs/forced") == {}
    assert len(list(run.results())) == 5


def test_raw_outputs_are_dropped_once_collected_when_the_policy_says_so(
    runner: BatchRunner, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu, keep_raw_outputs=False), "lean")
        summary = run.wait(poll_interval=0.05)
    assert summary.completed == 30
    names = {Path(k).name for k in _files(tmp_path / "artifacts/runs/lean")}
    assert "output.jsonl" not in names
    assert "input.jsonl" in names  # inputs are kept until pruned

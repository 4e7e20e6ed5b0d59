"""Resuming: a run interrupted mid-ingest continues from its last durable checkpoint in a
fresh process; a changed input or job is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchRunner,
    ItemStatus,
    JobMismatchError,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
    RunStatus,
)
from batchor.testing import OpenAIBatchEmulator

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from batchor import (BatchJob, BatchRunner, JsonlItemSource, OpenAIProviderConfig,
                         PromptParts)

    crash_at = int(sys.argv[1])
    calls = 0

    def build(item):
        global calls
        calls += 1
        if calls == crash_at:
            os._exit(17)  # a hard crash: no cleanup, no rollback handlers
        return PromptParts(prompt=item.payload["text"])

    runner = BatchRunner(store="sqlite:///run.db", artifacts="artifacts")
    job = BatchJob(
        items=JsonlItemSource("items.jsonl", id_field="id"),
        build_prompt=build,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
    )
    run = runner.start(job, run_id="resume")
    summary = run.wait(poll_interval=0.05, max_poll_interval=0.2)
    print(json.dumps({"calls": calls, "status": summary.status.value}))
    """
)


def _items(path: Path, n: int) -> None:
    path.write_text(
        "".join(json.dumps({"id": f"i{k}", "text": f"text {k}"}) + "\n" for k in range(n))
    )


@pytest.mark.slow  # a child process crashes mid-ingest of 40,000 items, another resumes
def test_a_crash_mid_ingest_resumes_from_the_last_durable_slice(tmp_path: Path) -> None:
    n = 40_000
    _items(tmp_path / "items.jsonl", n)
    (tmp_path / "child.py").write_text(CHILD)
    with OpenAIBatchEmulator() as emu:
        env = dict(os.environ, OPENAI_BASE_URL=emu.base_url, OPENAI_API_KEY=emu.api_key)

        def child(crash_at: int) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "child.py", str(crash_at)],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                cwd=tmp_path,
            )

        crashed = child(32_345)  # 8 calls fingerprint the first items, then ingestion
        assert crashed.returncode == 17, crashed.stderr
        assert emu.stats.total_calls == 0  # nothing is sent before ingestion completes
        with BatchRunner(f"sqlite:///{tmp_path}/run.db", tmp_path / "artifacts") as runner:
            durable = runner.get_run("resume").summary().total
        # Whole slices only, each committed with the source checkpoint after it.
        assert durable % 5_000 == 0
        assert 0 < durable < 32_345
        resumed = child(0)
        assert resumed.returncode == 0, resumed.stderr
        outcome = json.loads(resumed.stdout)
        assert outcome["status"] == "completed"
        # Only what was not durable is built again (+ 8 calls to fingerprint the first items).
        assert outcome["calls"] == 8 + (n - durable)
        answered = emu.stats.lines_answered
        assert len(answered) == n
        assert set(answered.values()) == {1}

    run = BatchRunner(f"sqlite:///{tmp_path}/run.db", tmp_path / "artifacts").get_run("resume")
    results = list(run.results())
    assert [r.item_id for r in results] == [f"i{k}" for k in range(n)]
    assert {r.status for r in results} == {ItemStatus.COMPLETED}


def _job(path: Path, emu: OpenAIBatchEmulator) -> BatchJob:
    return BatchJob(
        items=JsonlItemSource(path, id_field="id"),
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=OpenAIProviderConfig(model="m", base_url=emu.base_url, api_key=emu.api_key),
    )


def test_a_changed_input_is_refused(tmp_path: Path, openai_emulator: OpenAIBatchEmulator) -> None:
    path = tmp_path / "items.jsonl"
    _items(path, 5)
    runner = BatchRunner(f"sqlite:///{tmp_path}/run.db", tmp_path / "artifacts")
    runner.start(_job(path, openai_emulator), "changing").wait()
    _items(path, 6)
    with pytest.raises(JobMismatchError, match="started from a different input"):
        runner.start(_job(path, openai_emulator), "changing")
    _items(path, 5)  # the same content again is the same input
    again = runner.start(_job(path, openai_emulator), "changing")
    assert again.summary().status is RunStatus.COMPLETED

"""Kill a run with SIGKILL at every step boundary, resume it in a fresh process: exactly one
provider batch per batch key, no item lost or duplicated, nothing bought twice, and results
equal to an uninterrupted run.

The plain responses job goes through every kill point at 12,000 items (2 batches, each
collected in 2 chunks), 3 repetitions each. The issue's sizes go through the kill points where
size matters, in the slow tier: 100,000 embeddings items (2 batches of 50,000, each collected
in 10 chunks, ingested in 20 slices) and 20,000 chat items through the ``AzureOpenAI`` client
to the emulator's Azure routes (2 batches of 10,000).

A structured job through Anthropic's Message Batches (requests inline in the create call,
batches without metadata) goes through every kill point that applies to it (all but
``upload-unrecorded``: nothing is uploaded; ``after-upload`` is the record that its requests
are ready to go inline), and a structured job through Gemini's Batch Mode (an input file
uploaded through the Files API, batches that keep only a display name) through all of them,
each at 12,000 items in the slow tier: 3 repetitions of the two create points, whose recovery
is the one that differs (``during-create`` is a create that succeeded on the server while the
client was killed; the batch is found again by what the provider keeps of it), one of the
others.

Every point at the issues' sizes, 3 repetitions each (minutes; by hand):
``uv run python tests/crash/harness.py --job embeddings --items 100000``, ``--job azure --items
20000``, ``--job anthropic --repetitions 3``, ``--job gemini --repetitions 3``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.crash import harness
from tests.crash.harness import Job

# Where the size of a run changes what a kill interrupts: ingestion slices, the create of a
# large batch, a download and a persist that span chunks.
_SIZED_POINTS = ("mid-ingest", "during-create", "during-download", "during-persist")
_CREATE_POINTS = ("during-create", "after-create")

CASES = (
    [
        pytest.param(Job("responses"), point, 3, id=f"responses-{point}")
        for point in harness.KILL_POINTS
    ]
    + [
        pytest.param(job, point, 1, id=f"{job}-{point}", marks=pytest.mark.slow)
        for job, points in (
            (Job("embeddings", 100_000), _SIZED_POINTS),
            (Job("azure", 20_000), _SIZED_POINTS),
        )
        for point in points
    ]
    + [
        pytest.param(
            job,
            point,
            3 if point in _CREATE_POINTS else 1,
            id=f"{job}-{point}",
            marks=pytest.mark.slow,
        )
        for job in (Job("anthropic"), Job("gemini"))
        for point in job.points
    ]
)


@pytest.fixture(scope="module")
def expected_for(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[Job], list[list[object]]]:
    """The results of an uninterrupted run of a job, run once per job and module."""
    done: dict[Job, list[list[object]]] = {}

    def expected(job: Job) -> list[list[object]]:
        if job not in done:
            done[job] = harness.baseline(tmp_path_factory.mktemp(f"baseline-{job}"), job)
        return done[job]

    return expected


@pytest.mark.parametrize(("job", "point", "repetitions"), CASES)
def test_a_killed_run_resumes_exactly_once(
    job: Job,
    point: str,
    repetitions: int,
    expected_for: Callable[[Job], list[list[object]]],
    tmp_path: Path,
) -> None:
    expected = expected_for(job)
    for rep in range(repetitions):
        outcome = harness.repetition(tmp_path, point, rep, expected, job)
        assert outcome.killed, outcome
        assert outcome.batches_per_key == {1}, outcome
        assert outcome.unheld_batches == 0, outcome
        if point == "during-create":  # the create landed; its answer never arrived
            assert outcome.created_before_kill >= 1, outcome
        assert outcome.lost == 0, outcome
        assert outcome.duplicated == 0, outcome
        assert outcome.lines_bought_twice == 0, outcome
        assert outcome.orphaned_uploads == 0, outcome
        assert outcome.equal_to_baseline, outcome
        assert outcome.apis_called == {job.api}, outcome  # Azure's routes for the Azure job

"""Kill a run with SIGKILL at every step boundary, resume it in a fresh process: exactly one
provider batch per batch key, no item lost or duplicated, nothing bought twice, and results
equal to an uninterrupted run.

The plain responses job goes through every kill point at 12,000 items (2 batches, each
collected in 2 chunks), 3 repetitions each: the engine's recovery at each step is the same
for every provider. The slow tier adds, per provider, the points where that provider or the
issue's size changes what a kill interrupts:

- 100,000 embeddings items (2 batches of 50,000, collected in 10 chunks): a kill during the
  download and during the persist of a chunked collect;
- 20,000 chat items through the ``AzureOpenAI`` client to the emulator's Azure routes: a kill
  during the create;
- Anthropic's Message Batches (requests inline in the create call, batches without metadata;
  ``upload-unrecorded`` does not apply) and Gemini's Batch Mode (a Files API upload, batches
  that keep only a display name), 12,000 structured items: a create that succeeded on the
  server while the client was killed (3 repetitions), and a kill right after the create.

Every point at the issues' sizes, 3 repetitions each, takes minutes; run it by hand (the
figures are in the closing notes of issues #13 and #14):
``uv run python tests/crash/harness.py --job embeddings --items 100000``, ``--job azure --items
20000``, ``--job anthropic --repetitions 3``, ``--job gemini --repetitions 3``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.crash import harness
from tests.crash.harness import Job

# Every case SIGKILLs a child process and resumes it in a fresh one: the slow tier.
pytestmark = pytest.mark.slow

# The slow tier's cases: (job, kill point, repetitions).
_SLOW = [
    (Job("embeddings", 100_000), "during-download", 1),
    (Job("embeddings", 100_000), "during-persist", 1),
    (Job("azure", 20_000), "during-create", 1),
    (Job("anthropic"), "during-create", 3),
    (Job("anthropic"), "after-create", 1),
    (Job("gemini"), "during-create", 3),
    (Job("gemini"), "after-create", 1),
]

CASES = [
    pytest.param(Job("responses"), point, 3, id=f"responses-{point}")
    for point in harness.KILL_POINTS
] + [
    pytest.param(job, point, reps, id=f"{job}-{point}", marks=pytest.mark.slow)
    for job, point, reps in _SLOW
]


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

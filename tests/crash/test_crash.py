"""Kill a run with SIGKILL at every step boundary, resume it in a fresh process: exactly one
provider batch per batch key, no item lost or duplicated, nothing bought twice, and results
equal to an uninterrupted run (3 repetitions per kill point)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash import harness


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> list[list[object]]:
    return harness.baseline(tmp_path_factory.mktemp("baseline"))


@pytest.mark.parametrize("point", harness.KILL_POINTS)
def test_a_killed_run_resumes_exactly_once(
    point: str, expected: list[list[object]], tmp_path: Path
) -> None:
    for rep in range(3):
        outcome = harness.repetition(tmp_path, point, rep, expected)
        assert outcome.killed, outcome
        assert outcome.batches_per_key == {1}, outcome
        assert outcome.lost == 0, outcome
        assert outcome.duplicated == 0, outcome
        assert outcome.lines_bought_twice == 0, outcome
        assert outcome.orphaned_uploads == 0, outcome
        assert outcome.equal_to_baseline, outcome

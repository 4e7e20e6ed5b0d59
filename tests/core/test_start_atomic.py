"""``start`` is atomic: a run exists once its input has been read without error (or while it
is checkpointed past valid rows); a bad row, an unwritable artifact location, a missing key
or ``memory://`` artifacts with a durable store leave nothing behind, so the same call with
the cause fixed starts cleanly under the same run id."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchor import (
    BatchItem,
    BatchJob,
    BatchRunner,
    ConfigurationError,
    CsvItemSource,
    JsonlItemSource,
    ParquetItemSource,
    ProviderAuthError,
    RunStatus,
    SourceError,
)
from batchor.artifacts.local import LocalArtifactStore
from batchor.sources import csv as csv_source
from batchor.testing import OpenAIBatchEmulator

from .conftest import MakeJob, make_items

ROWS = 20
LATE = 13  # with slices of 4 items, three slices are committed before this row is read
# The CSV source's field-size limit (10 MB once it is configurable, the csv module's 128 KiB
# before): one character more is a bad row.
FIELD_LIMIT = int(getattr(csv_source, "DEFAULT_FIELD_SIZE_LIMIT", 131_072))

Row = dict[str, Any]


def _rows() -> list[Row]:
    return [{"id": f"r{i}", "text": f"review {i}"} for i in range(ROWS)]


def _csv(path: Path, rows: list[Row]) -> None:
    lines = ["id,text"]
    for row in rows:
        lines.append(row["raw"] if "raw" in row else f"{row['id']},{row['text']}")
    path.write_text("\n".join(lines) + "\n")


def _jsonl(path: Path, rows: list[Row]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _parquet(path: Path, rows: list[Row]) -> None:
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    pq.write_table(table, path)


@dataclass(frozen=True)
class Case:
    filename: str
    write: Callable[[Path, list[Row]], None]
    bad: Callable[[Row], Row]
    says: tuple[str, ...]  # what the one-line message names (besides the file)
    source: Callable[[Path], Any]


CASES: dict[str, Case] = {
    "bad CSV row (empty id)": Case(
        "in.csv",
        _csv,
        lambda r: {**r, "id": ""},
        ("'id'",),
        lambda p: CsvItemSource(p, id_field="id"),
    ),
    "missing JSONL id": Case(
        "in.jsonl",
        _jsonl,
        lambda r: {"text": r["text"]},
        ("'id'",),
        lambda p: JsonlItemSource(p, id_field="id"),
    ),
    "null Parquet id": Case(
        "in.parquet",
        _parquet,
        lambda r: {**r, "id": None},
        ("'id'",),
        lambda p: ParquetItemSource(p, id_field="id"),
    ),
    "ragged CSV row": Case(
        "in.csv",
        _csv,
        lambda r: {"raw": f"{r['id']},{r['text']},extra"},
        ("more fields",),
        lambda p: CsvItemSource(p, id_field="id"),
    ),
    "lone surrogate": Case(
        "in.jsonl",
        _jsonl,
        lambda r: {**r, "text": "half \ud800 a pair"},  # written as the escape \ud800
        (),
        lambda p: JsonlItemSource(p, id_field="id"),
    ),
    "CSV field-size limit": Case(
        "in.csv",
        _csv,
        lambda r: {**r, "text": "x" * (FIELD_LIMIT + 1)},
        (),
        lambda p: CsvItemSource(p, id_field="id"),
    ),
}


def assert_no_run(runner: BatchRunner, run_id: str) -> None:
    """Neither the run nor any of its artifacts is left."""
    assert runner.store.get_run(run_id) is None
    assert list(runner.artifacts.keys(f"runs/{run_id}")) == []


def assert_completes(runner: BatchRunner, job: BatchJob, run_id: str, total: int = ROWS) -> None:
    summary = runner.run_and_wait(job, run_id, timeout=60).summary()
    assert summary.status is RunStatus.COMPLETED, summary
    assert summary.completed == total


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message, type(exc)
    assert "\n" not in message, message
    return message


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchor.engine.ingest.SLICE_SIZE", 4)


def _bad_then_fixed(
    runner: BatchRunner, make_job: MakeJob, tmp_path: Path, name: str, at: int, run_id: str
) -> None:
    """Start a run of a file whose row ``at`` is bad: one-line error naming the file, nothing
    left; then the fixed file under the same run id completes."""
    case = CASES[name]
    path = tmp_path / case.filename
    rows = _rows()
    rows[at] = case.bad(rows[at])
    case.write(path, rows)
    ingested: list[int] = []
    with pytest.raises(SourceError) as info:
        runner.start(make_job(case.source(path)), run_id, on_ingest=ingested.append)
    message = one_line(info.value)
    assert case.filename in message or "item" in message, message
    for part in case.says:
        assert part in message, message
    if at >= LATE:
        assert ingested, "slices were committed before the bad row"
    assert_no_run(runner, run_id)

    case.write(path, _rows())
    assert_completes(runner, make_job(case.source(path)), run_id)


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_row_among_the_first_leaves_no_run(
    runner: BatchRunner, make_job: MakeJob, tmp_path: Path, name: str
) -> None:
    _bad_then_fixed(runner, make_job, tmp_path, name, at=1, run_id="X")


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_row_after_committed_slices_rolls_the_run_back(
    runner: BatchRunner, make_job: MakeJob, tmp_path: Path, small_slices: None, name: str
) -> None:
    _bad_then_fixed(runner, make_job, tmp_path, name, at=LATE, run_id="X")


@pytest.mark.parametrize("at", [1, LATE])
def test_a_bad_row_leaves_no_run_on_postgres(
    pg_url: str,
    make_job: MakeJob,
    tmp_path: Path,
    small_slices: None,
    at: int,
) -> None:
    with BatchRunner(pg_url, tmp_path / "artifacts") as runner:
        _bad_then_fixed(runner, make_job, tmp_path, "bad CSV row (empty id)", at, "pg")


def test_a_lone_surrogate_from_python_items_is_one_line_and_leaves_no_run(
    runner: BatchRunner, make_job: MakeJob, small_slices: None
) -> None:
    items = make_items(ROWS)
    items[LATE] = BatchItem(item_id="item-13", payload={"text": "half \ud800"})
    with pytest.raises(SourceError) as info:
        runner.start(make_job(items), "py")
    assert "'item-13'" in one_line(info.value)
    assert_no_run(runner, "py")
    items[LATE] = BatchItem(item_id="bad-\udc80-id", payload={"text": "fine"})
    with pytest.raises(SourceError) as info:
        runner.start(make_job(items), "py")
    assert "lone surrogate" in one_line(info.value)
    assert_no_run(runner, "py")
    assert_completes(runner, make_job(make_items(ROWS)), "py")


def test_any_exception_while_reading_rolls_the_run_back(
    runner: BatchRunner, make_job: MakeJob, small_slices: None
) -> None:
    def items() -> Iterator[BatchItem]:
        yield from make_items(LATE)
        raise RuntimeError("the source's own bug")

    with pytest.raises(RuntimeError):
        runner.start(make_job(items()), "raw")
    assert_no_run(runner, "raw")
    assert_completes(runner, make_job(make_items(ROWS)), "raw")


def test_a_resumed_run_that_meets_a_bad_row_is_rolled_back(
    runner: BatchRunner, make_job: MakeJob, tmp_path: Path, small_slices: None
) -> None:
    """An interrupted start keeps the run (checkpointed past valid rows, resumable); when the
    resumed read meets a bad row, nothing has been sent yet, so the run goes too and the
    fixed file starts cleanly instead of being "a different input"."""
    path = tmp_path / "in.csv"
    rows = _rows()
    rows[LATE] = {**rows[LATE], "id": ""}
    _csv(path, rows)

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.start(make_job(CsvItemSource(path, id_field="id")), "resumed", on_ingest=interrupt)
    kept = runner.store.get_run("resumed")
    assert kept is not None
    assert kept.ingested_count == 4
    with pytest.raises(SourceError, match=r"in\.csv"):
        runner.start(make_job(CsvItemSource(path, id_field="id")), "resumed")
    assert_no_run(runner, "resumed")
    _csv(path, _rows())
    assert_completes(runner, make_job(CsvItemSource(path, id_field="id")), "resumed")


# ---- the artifact location ------------------------------------------------------------------
@contextmanager
def mode_bits_enforced(root: Path) -> Iterator[None]:
    """Root ignores permission bits: make writes under ``root`` fail as they would for any
    other user while ``root`` is not writable."""
    if os.geteuid() != 0:
        yield
        return
    original = LocalArtifactStore.open_write

    @contextmanager
    def open_write(self: LocalArtifactStore, key: str) -> Iterator[BinaryIO]:
        if self.root == root.resolve() and not root.stat().st_mode & stat.S_IWUSR:
            raise PermissionError(13, "Permission denied", str(root / key))
        with original(self, key) as fh:
            yield fh

    LocalArtifactStore.open_write = open_write  # type: ignore[method-assign]
    try:
        yield
    finally:
        LocalArtifactStore.open_write = original  # type: ignore[method-assign]


def test_a_read_only_artifact_directory_fails_before_the_run_exists(
    tmp_path: Path, make_job: MakeJob
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    artifacts.chmod(0o500)
    store = f"sqlite:///{tmp_path}/store.db"
    try:
        with mode_bits_enforced(artifacts), BatchRunner(store, artifacts) as runner:
            with pytest.raises(ConfigurationError) as info:
                runner.start(make_job(make_items(ROWS)), "ro")
            message = one_line(info.value)
            assert str(artifacts) in message
            assert "Permission denied" in message
            assert runner.store.get_run("ro") is None
            artifacts.chmod(0o700)
            assert_completes(runner, make_job(make_items(ROWS)), "ro")
    finally:
        artifacts.chmod(0o700)


def test_a_file_where_the_artifact_directory_should_be_fails_before_the_run_exists(
    tmp_path: Path, make_job: MakeJob
) -> None:
    (tmp_path / "taken").write_text("not a directory")
    store = f"sqlite:///{tmp_path}/store.db"
    with BatchRunner(store, tmp_path / "taken" / "artifacts") as runner:
        with pytest.raises(ConfigurationError) as info:
            runner.start(make_job(make_items(ROWS)), "nd")
        assert "taken/artifacts" in one_line(info.value)
        assert runner.store.get_run("nd") is None
    with BatchRunner(store, tmp_path / "artifacts") as runner:
        assert_completes(runner, make_job(make_items(ROWS)), "nd")


def test_an_artifact_write_failing_mid_ingest_rolls_the_run_back(
    runner: BatchRunner,
    make_job: MakeJob,
    small_slices: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = LocalArtifactStore.open_write
    slices = 0

    @contextmanager
    def full_after_two(self: LocalArtifactStore, key: str) -> Iterator[BinaryIO]:
        nonlocal slices
        if "/requests/" in key:
            slices += 1
            if slices > 2:
                raise OSError(28, "No space left on device", key)
        with original(self, key) as fh:
            yield fh

    monkeypatch.setattr(LocalArtifactStore, "open_write", full_after_two)
    with pytest.raises(OSError, match="No space left"):
        runner.start(make_job(make_items(ROWS)), "full")
    assert_no_run(runner, "full")
    monkeypatch.setattr(LocalArtifactStore, "open_write", original)
    assert_completes(runner, make_job(make_items(ROWS)), "full")


def test_memory_artifacts_with_a_durable_store_are_refused(
    tmp_path: Path, make_job: MakeJob
) -> None:
    store = f"sqlite:///{tmp_path}/store.db"
    with pytest.raises(ConfigurationError) as info:
        BatchRunner(store, "memory://batchor-atomic/artifacts")
    message = one_line(info.value)
    assert "memory://" in message
    assert "store" in message
    with BatchRunner(store, tmp_path / "artifacts") as runner:
        assert runner.store.get_run("mem") is None
        assert_completes(runner, make_job(make_items(ROWS)), "mem")
    # With the in-memory store both live and die with the process: allowed.
    with BatchRunner("memory://", "memory://batchor-atomic/throwaway") as runner:
        assert_completes(runner, make_job(make_items(3)), "throwaway", total=3)


def test_memory_artifacts_with_postgres_are_refused(pg_url: str) -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        BatchRunner(pg_url, "memory://batchor-atomic/pg")


# ---- credentials --------------------------------------------------------------------------
def test_a_missing_api_key_fails_before_the_run_exists(
    runner: BatchRunner,
    make_job: MakeJob,
    openai_emulator: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = make_job(make_items(ROWS))
    keyless = BatchJob(
        items=job.items,
        build_prompt=job.build_prompt,
        provider_config=replace(job.provider_config, api_key=None),
        structured_output=job.structured_output,
    )
    with pytest.raises(ProviderAuthError) as info:
        runner.start(keyless, "nokey")
    assert "OPENAI_API_KEY" in one_line(info.value)
    assert_no_run(runner, "nokey")
    assert openai_emulator.stats.batches_created == 0

    monkeypatch.setenv("OPENAI_API_KEY", openai_emulator.api_key)
    assert_completes(runner, replace(keyless, items=make_items(ROWS)), "nokey")
    # A run that has ended needs no key to be started again (nothing is left to send).
    monkeypatch.delenv("OPENAI_API_KEY")
    again = runner.start(replace(keyless, items=make_items(ROWS)), "nokey")
    assert again.summary().status is RunStatus.COMPLETED
